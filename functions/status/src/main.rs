//! The `status` function: API Gateway routes every `GET` here — `/v1/jobs/{id}` (with the
//! long-poll `?wait=`), `/v1/jobs`, `/v1/report`, `/` and `/openapi.json` — served by the same
//! Router as `ackflow serve`. Its timeout sits above the long-poll cap and under API Gateway's
//! 30 s.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Configuration read and clients built once per cold start, outside the handler.
    let function = ackflow_lambda::start(ackflow_lambda::FunctionKind::Status).await?;
    // Instrumented like `api` (it records no job events today, but a redrive or a cancel
    // routed here would).
    // A request still running half a second before the invocation's deadline is answered with
    // ackflow's own 503 rather than left to Lambda's kill.
    let router = ackflow_lambda::instrument_router(ackflow_lambda::answer_before_deadline(
        ackflow_http::router(function.api_state()),
    ));
    lambda_http::run(router).await
}
