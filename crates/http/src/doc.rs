//! The OpenAPI 3.1 document, generated from the `#[utoipa::path]` annotations of the handlers
//! and the `ToSchema` wire types, plus finishing touches (the `Modify`s below): the bearer
//! security scheme, the catalog of problem types (built from core's constructors), parameter
//! types without `null` or machine formats, links from a submission to its job, and the
//! `X-Correlation-Id` header on every answer.
//!
//! Checked two ways: `tests/openapi.rs` holds the document to the router (every routed path and
//! method, each operation's problem answers, the headers), and `infra/scripts/schemathesis`
//! holds a live server to the document.

use ackflow_core::{JobState, Problem};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::Required;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::view;

/// The header that ties a request to its log lines.
const CORRELATION_HEADER: &str = "X-Correlation-Id";

/// How the `X-Correlation-Id` answer header is described on every response.
const CORRELATION_OUT: &str =
    "The request's correlation id (the one sent, when valid, else a generated one); log lines carry it too.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ackflow",
        description = "Asynchronous request-reply: submit a job and get `202 Accepted` at once; \
            a worker finishes it later; poll the job (or long-poll with `wait` and `If-None-Match`) \
            until it has ended. Every 4xx and 5xx answer of ackflow is `application/problem+json` \
            (RFC 9457); in front of AWS, API Gateway itself may answer some errors as \
            `{\"message\": ...}`. Every answer carries `X-Correlation-Id`. Unknown addresses are answered \
            `404` and methods an address does not take `405` (with `Allow`), both as problems."
    ),
    paths(
        crate::jobs::submit,
        crate::jobs::get_job,
        crate::jobs::cancel_job,
        crate::jobs::list_jobs,
        crate::report::report,
        crate::page::index,
        crate::page::asset,
        crate::page::openapi_json,
    ),
    components(schemas(
        view::Submit,
        view::JobView,
        view::ProgressView,
        view::HistoryView,
        view::Links,
        view::JobList,
        view::ReportView,
        view::StateCounts,
        view::LatencyView,
        view::OldestOpenView,
        view::FailureCountView,
        view::QueueDepthView,
        view::JobStateSchema,
        view::ProblemSchema,
        view::FieldErrorSchema,
    )),
    modifiers(&BearerScheme, &ProblemCatalog, &PlainParameters, &JobLinks, &CorrelationHeader),
    tags(
        (name = "jobs", description = "Submit, read, wait for, cancel and list jobs."),
        (name = "report", description = "Figures about your jobs."),
        (name = "meta", description = "The status page and this document."),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 description of every route of [`crate::router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `bearer`: a configured token on one machine, a JWT verified by API Gateway on AWS. Operations
/// list it as optional, because authentication may be off.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A configured token on a single machine; a JWT (its `sub` is the owner) on AWS.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Lists every problem `type` of ackflow's own in the `Problem` schema's description.
struct ProblemCatalog;

/// One of each problem ackflow itself answers or stores (the arguments only shape `detail`).
fn catalog() -> Vec<Problem> {
    vec![
        Problem::malformed_json(""),
        Problem::bad_request(""),
        Problem::bad_cursor(),
        Problem::unauthorized(),
        Problem::job_not_found(),
        Problem::route_not_found(),
        Problem::method_not_allowed(),
        Problem::not_cancellable(JobState::Running),
        Problem::payload_too_large(0),
        Problem::unsupported_media_type(),
        Problem::unsupported_transfer_encoding(),
        Problem::unknown_kind("", &[]),
        Problem::invalid_input(Vec::new()),
        Problem::idempotency_key_reused(),
        Problem::unavailable(),
        Problem::internal(),
        Problem::deadline_exceeded(),
        Problem::attempts_exhausted(0),
        Problem::enqueue_failed(),
        Problem::unreadable_message(),
        Problem::result_too_large(0),
    ]
}

impl Modify for ProblemCatalog {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(problem))) = components.schemas.get_mut("Problem") else {
            return;
        };
        let mut text = problem.description.clone().unwrap_or_default();
        text.push_str(
            "\n\nProblem types of ackflow (a job's processor adds its own, \
             `urn:ackflow:problem:{kind}:{slug}`, status 422):\n",
        );
        for p in catalog() {
            text.push_str(&format!("\n- `{}` ({}): {}", p.type_, p.status, p.title));
        }
        problem.description = Some(text);
    }
}

/// Three corrections to the parameters the macros write:
/// - optional ones come out as `type: [string, "null"]`; a header or query parameter is either
///   sent or not, never `null`, so the `null` is dropped;
/// - integers get a machine format (`int64`, `int32`), which implies bounds the server does not
///   have: it reads any run of digits (a longer `wait` is shortened to the cap; `limit` states its
///   own range), so the format is dropped and only the stated minimum and maximum remain;
/// - an optional query parameter sent empty (`?state=`, as HTML forms send unset fields) counts
///   as absent, so each one also admits the empty string.
struct PlainParameters;

impl Modify for PlainParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() {
                        if schema.schema_type == SchemaType::Type(Type::Integer)
                            || matches!(&schema.schema_type, SchemaType::Array(types) if types.contains(&Type::Integer))
                        {
                            schema.format = None;
                        }
                        if let SchemaType::Array(types) = &schema.schema_type {
                            let kept: Vec<Type> = types
                                .iter()
                                .filter(|t| **t != Type::Null)
                                .cloned()
                                .collect();
                            schema.schema_type = match kept.as_slice() {
                                [one] => SchemaType::Type(one.clone()),
                                _ => SchemaType::Array(kept),
                            };
                        }
                    }
                    if parameter.parameter_in == ParameterIn::Query
                        && parameter.required == Required::False
                    {
                        if let Some(schema) = parameter.schema.take() {
                            let empty = ObjectBuilder::new()
                                .schema_type(Type::String)
                                .max_length(Some(0));
                            parameter.schema = Some(RefOr::T(Schema::AnyOf(
                                AnyOfBuilder::new().item(schema).item(empty).build(),
                            )));
                        }
                    }
                }
            }
        }
    }
}

/// OpenAPI links from an accepted job to the operations on it, so that tools (and schemathesis's
/// stateful phase) can follow a submission to reading and cancelling that very job.
struct JobLinks;

impl Modify for JobLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(post) = openapi
            .paths
            .paths
            .get_mut("/v1/jobs")
            .and_then(|item| item.post.as_mut())
        else {
            return;
        };
        let Some(RefOr::T(accepted)) = post.responses.responses.get_mut("202") else {
            return;
        };
        for (operation, description) in [
            ("getJob", "Read the accepted job, or wait for it to change."),
            ("cancelJob", "Cancel the accepted job while it is queued."),
        ] {
            // utoipa 5.5 serializes `Link::operation_id` as `operation_id`, not `operationId`, so
            // tools do not see it; the field goes in through the (flattened) extensions instead.
            let mut name = Extensions::default();
            name.insert("operationId".to_owned(), operation.into());
            accepted.links.insert(
                operation.to_owned(),
                RefOr::T(
                    LinkBuilder::new()
                        .parameter("id", "$response.body#/id")
                        .description(description)
                        .extensions(Some(name))
                        .build(),
                ),
            );
        }
    }
}

/// The `X-Correlation-Id` the middleware sets on every answer (problems, 304s and the page
/// included), written once here rather than on each response of each annotation.
struct CorrelationHeader;

impl Modify for CorrelationHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .entry(CORRELATION_HEADER.to_owned())
                            .or_insert_with(|| {
                                HeaderBuilder::new()
                                    .schema(ObjectBuilder::new().schema_type(Type::String))
                                    .description(Some(CORRELATION_OUT))
                                    .build()
                            });
                    }
                }
            }
        }
    }
}
