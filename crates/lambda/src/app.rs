//! Building ackflow for a function, once per cold start: [`FunctionConfig`] read from the
//! environment, the SDK clients, the adapters, the processors, the use cases ([`Function`]).
//! Every function binary calls [`start`] first, outside its handler, naming itself
//! ([`FunctionKind`]).

use std::sync::Arc;

use ackflow_aws::{AwsBackend, AwsConfig, Clients, ConfigError};
use ackflow_core::{Ackflow, PortError, SystemClock};
use ackflow_http::{ApiState, OwnerResolver};
use ackflow_processors::order::{DynamoOrderBook, OrderBook};
use ackflow_processors::registry_with;

use crate::telemetry::MetricsConfig;
use crate::{BatchOptions, JwtOwners};

/// The variables this crate reads beside [`ackflow_aws::env`], the knobs of
/// [`ackflow_core::settings::env`] and [`crate::owner::ALLOW_ANONYMOUS`].
pub mod env {
    /// Serve the `demo` kind: exactly `true` turns it on; off by default on AWS (SPEC).
    pub const DEMO: &str = "ACKFLOW_DEMO";
    /// Records of one SQS batch handled at once by the worker (the same knob as `ackflow
    /// serve`'s jobs processed at once); default [`crate::BatchOptions::DEFAULT_CONCURRENCY`].
    pub const CONCURRENCY: &str = "ACKFLOW_CONCURRENCY";
    /// The CloudWatch namespace of the metrics (see [`crate::telemetry::MetricsConfig`]).
    pub const METRICS_NAMESPACE: &str = crate::telemetry::METRICS_NAMESPACE;
}

/// Why a function could not start. Lambda reports it as an init error and tries a new
/// instance on the next invocation; the message names the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The queue, table or knobs are misconfigured.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A variable of this crate has a value that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The order book's stock could not be seeded.
    #[error("could not seed the order book's stock")]
    Seed(#[source] PortError),
}

/// Everything a function reads from its environment, read once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    /// Queue, dead-letter queue, table and the knobs.
    pub aws: AwsConfig,
    /// Whether the `demo` kind is served ([`env::DEMO`]).
    pub demo: bool,
    /// Whether requests without an authorizer are served as the anonymous owner
    /// ([`crate::owner::ALLOW_ANONYMOUS`]).
    pub allow_anonymous: bool,
    /// How the worker works through a batch ([`env::CONCURRENCY`]).
    pub batch: BatchOptions,
    /// Where the metrics go ([`env::METRICS_NAMESPACE`]).
    pub metrics: MetricsConfig,
    /// Whether building the function seeds the order book's stock. Only the worker reserves
    /// stock, so [`start`] seeds there alone: in the other functions the seed's conditional
    /// writes were most of the cold start (measured in docs/BENCHMARKS.md).
    pub seed_stock: bool,
}

impl FunctionConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, StartupError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StartupError> {
        let aws = AwsConfig::from_lookup(&lookup)?;
        let demo = flag(&lookup, env::DEMO)?;
        let allow_anonymous = JwtOwners::from_lookup(&lookup).allows_anonymous();
        let concurrency = match lookup(env::CONCURRENCY).map(|v| v.trim().to_owned()) {
            None => BatchOptions::DEFAULT_CONCURRENCY,
            Some(v) if v.is_empty() => BatchOptions::DEFAULT_CONCURRENCY,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    StartupError::Invalid(format!(
                        "{} must be a whole number from 1 to 1000, not {v:?}",
                        env::CONCURRENCY
                    ))
                })?,
        };
        let metrics = MetricsConfig::from_lookup(&lookup)
            .map_err(|e| StartupError::Invalid(e.to_string()))?;
        Ok(Self {
            aws,
            demo,
            allow_anonymous,
            metrics,
            seed_stock: true,
            batch: BatchOptions {
                concurrency,
                ..BatchOptions::default()
            },
        })
    }

    /// The owner resolver of the API functions.
    pub fn owners(&self) -> JwtOwners {
        if self.allow_anonymous {
            JwtOwners::allowing_anonymous()
        } else {
            JwtOwners::new()
        }
    }
}

/// `true` or `false` (unset: `false`); anything else is refused rather than guessed.
fn flag(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Result<bool, StartupError> {
    match lookup(name).as_deref().map(str::trim) {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(StartupError::Invalid(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

/// ackflow, built for one function: the use cases over SQS and DynamoDB, and the configuration
/// they were built from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Function {
    /// The use cases.
    pub app: Arc<Ackflow>,
    /// What the function read at startup.
    pub config: Arc<FunctionConfig>,
}

impl Function {
    /// The state of [`ackflow_http::router`] for the API functions, with owners from the JWT
    /// authorizer ([`JwtOwners`]).
    pub fn api_state(&self) -> ApiState {
        let owners: Arc<dyn OwnerResolver> = Arc::new(self.config.owners());
        ApiState::new(self.app.clone(), owners)
    }
}

/// The functions of a deployment: what each one's `main` passes to [`start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// `POST /v1/jobs` and the other writes of the HTTP API.
    Api,
    /// The reads of the HTTP API (status, long-poll, list, report, the status page).
    Status,
    /// The SQS batch lifter: runs the processors.
    Worker,
    /// The scheduled sweep.
    Sweeper,
}

impl FunctionKind {
    /// The function's name, as in `template.yaml` and in the logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Status => "status",
            Self::Worker => "worker",
            Self::Sweeper => "sweeper",
        }
    }

    /// Whether this function reserves stock, and so seeds the order book at cold start.
    pub fn seeds_stock(self) -> bool {
        self == Self::Worker
    }
}

/// What every function's `main` does first: installs the JSON logs, reads
/// [`FunctionConfig::from_env`], loads the SDK configuration once ([`Clients::from_env`]) and
/// builds the function with [`function_from`] (seeding the order book's stock in the worker
/// only), then the metrics recorder. A startup error is logged with its whole chain (and names
/// the variable at fault) before it is returned to Lambda as the init error.
pub async fn start(kind: FunctionKind) -> Result<Function, StartupError> {
    crate::telemetry::init_logs();
    let function = kind.name();
    let built = async {
        let mut config = FunctionConfig::from_env()?;
        config.seed_stock = kind.seeds_stock();
        let clients = Clients::from_env().await;
        function_from(config, &clients).await
    };
    match built.await {
        Ok(built) => {
            if let Err(e) = crate::telemetry::init_metrics(&built.config.metrics) {
                // Metrics are not worth refusing to work for; the logs still say everything.
                tracing::error!(function, error = %e, "metrics are off");
            }
            tracing::info!(
                function,
                demo = built.config.demo,
                allow_anonymous = built.config.allow_anonymous,
                "started"
            );
            Ok(built)
        }
        Err(e) => {
            tracing::error!(function, error = %ackflow_core::error_chain(&e), "could not start");
            Err(e)
        }
    }
}

/// Builds the function from a configuration and clients: the SQS queue, the DynamoDB job store
/// and order book (its stock seeded from the catalog where absent when
/// [`FunctionConfig::seed_stock`]: a few conditional writes per cold start of the worker, so a
/// fresh deployment can take orders at once), the shipped processors
/// (`demo` only when configured) and the system clock.
pub async fn function_from(
    config: FunctionConfig,
    clients: &Clients,
) -> Result<Function, StartupError> {
    let backend = AwsBackend::new(config.aws.clone(), clients);
    let book = DynamoOrderBook::new(clients.dynamo.clone(), config.aws.table.clone());
    if config.seed_stock {
        book.seed().await.map_err(StartupError::Seed)?;
    }
    let book: Arc<dyn OrderBook> = Arc::new(book);
    let clock = Arc::new(SystemClock);
    let registry = registry_with(book, clock.clone(), config.demo);
    let app = Arc::new(backend.ackflow(registry, clock));
    Ok(Function {
        app,
        config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<FunctionConfig, StartupError> {
        let mut map: HashMap<String, String> = [
            (ackflow_aws::env::QUEUE_URL, "http://127.0.0.1:5000/1/jobs"),
            (
                ackflow_aws::env::DLQ_URL,
                "http://127.0.0.1:5000/1/jobs-dlq",
            ),
            (ackflow_aws::env::TABLE, "ackflow"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in pairs {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        FunctionConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn on_aws_demo_and_anonymous_access_are_off_unless_configured() {
        let config = from(&[]).expect("valid");
        assert!(!config.demo);
        assert!(!config.allow_anonymous);
        assert!(!config.owners().allows_anonymous());
        assert_eq!(config.batch, BatchOptions::default());

        let config =
            from(&[(env::DEMO, "true"), (crate::owner::ALLOW_ANONYMOUS, "true")]).expect("valid");
        assert!(config.demo);
        assert!(config.owners().allows_anonymous());
    }

    #[test]
    fn a_flag_that_is_neither_true_nor_false_is_refused_naming_it() {
        for value in ["yes", "1", "TRUE "] {
            let e = from(&[(env::DEMO, value)]).expect_err("refused");
            assert!(e.to_string().contains(env::DEMO), "{e}");
        }
    }

    #[test]
    fn the_batch_concurrency_is_read_and_bounded() {
        let config = from(&[(env::CONCURRENCY, "3")]).expect("valid");
        assert_eq!(config.batch.concurrency, 3);
        for bad in ["0", "-1", "many", "1001"] {
            let e = from(&[(env::CONCURRENCY, bad)]).expect_err("refused");
            assert!(e.to_string().contains(env::CONCURRENCY), "{bad}: {e}");
        }
    }

    #[test]
    fn a_missing_queue_variable_or_a_bad_knob_is_named() {
        let e = FunctionConfig::from_lookup(|_| None).expect_err("refused");
        assert!(e.to_string().contains(ackflow_aws::env::QUEUE_URL), "{e}");
        let e = from(&[(ackflow_core::settings::env::MAX_ATTEMPTS, "0")]).expect_err("refused");
        assert!(
            e.to_string()
                .contains(ackflow_core::settings::env::MAX_ATTEMPTS),
            "{e}"
        );
    }
}
