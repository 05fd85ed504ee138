//! Serve your own kind of job next to the shipped ones, without forking ackflow.
//!
//! ```sh
//! cargo run -p ackflow-local --example custom_kind
//! curl -s -X POST localhost:3000/v1/jobs -H 'content-type: application/json' \
//!      -d '{"kind":"word-count","input":{"text":"acknowledge now, finish later"}}'
//! ```

// `Kind::parse` of a literal name cannot fail; `expect` documents that.
#![allow(clippy::expect_used)]

use ackflow_core::{async_trait, FieldError, JobContext, Kind, ProcessError, Processor, Rejection};
use ackflow_local::config::ServeArgs;
use ackflow_local::Server;
use clap::Parser;
use serde_json::{json, Value};

/// Counts the words of a text; refuses empty texts at accept time and very long words later.
#[derive(Debug)]
struct WordCount;

#[async_trait]
impl Processor for WordCount {
    fn kind(&self) -> Kind {
        Kind::parse("word-count").expect("a valid kind name")
    }

    fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>> {
        match input.get("text").and_then(Value::as_str) {
            Some(text) if !text.trim().is_empty() => Ok(()),
            _ => Err(vec![FieldError::new(
                "/text",
                "a non-empty string is required",
            )]),
        }
    }

    async fn process(&self, input: Value, ctx: &JobContext) -> Result<Value, ProcessError> {
        let text = input["text"].as_str().unwrap_or_default();
        ctx.progress(50, "Counting").await;
        if let Some(word) = text.split_whitespace().find(|w| w.len() > 100) {
            return Err(Rejection::new(
                "word-too-long",
                "Word too long",
                format!(
                    "The word starting with '{}' is over 100 characters; split it and try again.",
                    word.chars().take(10).collect::<String>()
                ),
            )
            .into());
        }
        Ok(json!({ "words": text.split_whitespace().count() }))
    }
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse().serve;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("ackflow listening on http://{}", listener.local_addr()?);
    Server::new(args)
        .with_processor(WordCount)
        .run(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
