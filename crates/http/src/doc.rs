//! The OpenAPI 3.1 document, generated from the `#[utoipa::path]` annotations of the handlers
//! and the `ToSchema` wire types, plus two finishing touches: the bearer security scheme and the
//! catalog of problem types (built from core's constructors, so it cannot drift from them).

use ackflow_core::{JobState, Problem};
use utoipa::openapi::schema::{SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::view;

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
    modifiers(&BearerScheme, &ProblemCatalog, &PlainParameters),
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

/// Optional header parameters come out of the macros as `type: [string, "null"]`; a header is
/// either sent or not, never `null`, so the `null` is dropped from every parameter's type.
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
                }
            }
        }
    }
}
