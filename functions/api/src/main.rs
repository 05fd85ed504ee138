//! The `api` function: API Gateway routes `POST /v1/jobs` and `DELETE /v1/jobs/{id}` here.
//! It serves them with the same Router as `ackflow serve` (so it would answer any route; the
//! split between `api` and `status` is only API Gateway's routing and IAM: this one may send
//! to the queue, `status` may not).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Configuration read and clients built once per cold start, outside the handler.
    let function = ackflow_lambda::start(ackflow_lambda::FunctionKind::Api).await?;
    // The invocation's X-Ray trace header goes with the job's message; metrics are flushed
    // before each response.
    // A request still running half a second before the invocation's deadline is answered with
    // ackflow's own 503 rather than left to Lambda's kill.
    let router = ackflow_lambda::instrument_router(ackflow_lambda::answer_before_deadline(
        ackflow_http::router(function.api_state()),
    ));
    lambda_http::run(router).await
}
