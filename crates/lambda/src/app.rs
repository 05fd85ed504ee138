//! Building ackflow for a function, once per cold start: [`FunctionConfig`] read from the
//! environment, the SDK clients, the adapters, the processors, the use cases ([`Function`]).
//! Every function binary calls [`start`] first, outside its handler, naming itself
//! ([`FunctionKind`]).

use std::sync::Arc;
use std::time::Duration;

use ackflow_aws::dynamo::ReportFold;
use ackflow_aws::{AwsBackend, AwsConfig, BudgetError, Clients, ConfigError, SdkBudget};
use ackflow_core::{Ackflow, SystemClock};
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
    /// The function's own timeout in whole seconds, as `template.yaml` sets it (Lambda does not
    /// tell a function its timeout before the first invocation): the SDK's timeouts are fitted
    /// into it ([`crate::FunctionKind::sdk_budget`]). Unset, the template's default for the
    /// function ([`crate::FunctionKind::default_timeout`]).
    pub const FUNCTION_TIMEOUT: &str = "ACKFLOW_FUNCTION_TIMEOUT_SECS";
}

/// The longest function timeout Lambda allows.
const MAX_FUNCTION_TIMEOUT: Duration = Duration::from_secs(900);

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
    /// The function's timeout leaves its SDK calls too little time.
    #[error(
        "the {function} function's timeout ({timeout:?}, {var}) is too short for the SDK calls it may have to make"
    )]
    Budget {
        /// The function.
        function: &'static str,
        /// Its timeout.
        timeout: Duration,
        /// The variable it was read from (named so the message says what to change).
        var: &'static str,
        /// The figures.
        #[source]
        source: BudgetError,
    },
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
    /// The function's timeout ([`env::FUNCTION_TIMEOUT`]), when set.
    pub function_timeout: Option<Duration>,
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
        let function_timeout = match lookup(env::FUNCTION_TIMEOUT).map(|v| v.trim().to_owned()) {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .ok()
                    .map(Duration::from_secs)
                    .filter(|t| !t.is_zero() && *t <= MAX_FUNCTION_TIMEOUT)
                    .ok_or_else(|| {
                        StartupError::Invalid(format!(
                            "{} must be a whole number of seconds from 1 to {}, not {v:?}",
                            env::FUNCTION_TIMEOUT,
                            MAX_FUNCTION_TIMEOUT.as_secs()
                        ))
                    })?,
            ),
        };
        Ok(Self {
            aws,
            demo,
            allow_anonymous,
            metrics,
            function_timeout,
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
    /// The fold of the table's change stream into the report's aggregates (the `sweeper`
    /// function's second event source).
    pub fold: ReportFold,
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

    /// The function's timeout in `template.yaml` by default (the template's test holds them
    /// equal), used when [`env::FUNCTION_TIMEOUT`] is unset.
    pub fn default_timeout(self) -> Duration {
        Duration::from_secs(match self {
            Self::Api => 15,
            Self::Status => 25,
            Self::Worker => 60,
            Self::Sweeper => 55,
        })
    }

    /// The SDK's timeouts for this function, fitted into its `timeout` so that the function
    /// answers (its own problem+json, its batch response) even when every call it still has to
    /// make hangs until the SDK gives up on it. What has to fit, after the last moment the
    /// function starts new work:
    /// - `api`, from the start, at most six: a submission's create, then the read-back of a
    ///   create whose answer was lost or the reopen of a keyed retry (with the read after its
    ///   conflict), the send, and the write that fails an unsent job with the read after its
    ///   conflict, or else the typical-latency read of a 202's `Retry-After`;
    /// - `status`, after the long-poll cap: the last read and the `Retry-After` read;
    /// - `worker`, after an attempt's lease (worker timeout + lease grace): the outcome write
    ///   still in flight (or the read after its conflict) and the delivery's visibility change.
    ///   A record starting later has less, and the batch lifter ([`crate::sqs`]) keeps it
    ///   within the invocation: no attempt starts whose lease would end within the lifter's
    ///   margin of the deadline, and a record still running at the deadline is cut and
    ///   reported as a failure;
    /// - `sweeper`, in the last third of its time, which it keeps by starting no job after the
    ///   first two ([`crate::sweep`]): a job's re-send, its write, and the read of a write
    ///   whose answer was lost.
    pub fn sdk_budget(
        self,
        settings: &ackflow_core::Settings,
        timeout: Duration,
    ) -> Result<SdkBudget, BudgetError> {
        let (slack, calls) = match self {
            Self::Api => (timeout, 6),
            Self::Status => (timeout.saturating_sub(settings.long_poll_cap), 2),
            Self::Worker => (timeout.saturating_sub(settings.lease()), 2),
            Self::Sweeper => (timeout / 3, 3),
        };
        SdkBudget::within(slack, calls)
    }
}

/// What every function's `main` does first: installs the JSON logs, reads
/// [`FunctionConfig::from_env`], loads the SDK configuration once with timeouts fitted into
/// the function's ([`FunctionKind::sdk_budget`], [`Clients::within`]) and builds the function
/// with [`function_from`], then the metrics recorder. A startup error is logged with its whole
/// chain (and names the variable at fault) before it is returned to Lambda as the init error.
pub async fn start(kind: FunctionKind) -> Result<Function, StartupError> {
    crate::telemetry::init_logs();
    let function = kind.name();
    let built = async {
        let config = FunctionConfig::from_env()?;
        let timeout = config
            .function_timeout
            .unwrap_or_else(|| kind.default_timeout());
        let budget = kind
            .sdk_budget(&config.aws.settings, timeout)
            .map_err(|source| StartupError::Budget {
                function,
                timeout,
                var: env::FUNCTION_TIMEOUT,
                source,
            })?;
        let clients = Clients::within(budget).await;
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
/// and order book (its stock seeded on first use, so building makes no call), the shipped
/// processors (`demo` only when configured) and the system clock.
pub async fn function_from(
    config: FunctionConfig,
    clients: &Clients,
) -> Result<Function, StartupError> {
    let backend = AwsBackend::new(config.aws.clone(), clients);
    let book: Arc<dyn OrderBook> = Arc::new(DynamoOrderBook::new(
        clients.dynamo.clone(),
        config.aws.table.clone(),
    ));
    let clock = Arc::new(SystemClock);
    let registry = registry_with(book, clock.clone(), config.demo);
    let app = Arc::new(backend.ackflow(registry, clock));
    let fold = ReportFold::new(clients.dynamo.clone(), config.aws.table.clone());
    Ok(Function {
        app,
        config: Arc::new(config),
        fold,
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
    fn the_function_timeout_is_read_and_bounded() {
        assert_eq!(from(&[]).expect("valid").function_timeout, None);
        let config = from(&[(env::FUNCTION_TIMEOUT, "20")]).expect("valid");
        assert_eq!(config.function_timeout, Some(Duration::from_secs(20)));
        for bad in ["0", "901", "-1", "ten", "1.5"] {
            let e = from(&[(env::FUNCTION_TIMEOUT, bad)]).expect_err("refused");
            assert!(e.to_string().contains(env::FUNCTION_TIMEOUT), "{bad}: {e}");
        }
    }

    #[test]
    fn every_function_fits_its_sdk_calls_in_its_default_timeout() {
        let settings = from(&[]).expect("valid").aws.settings;
        for kind in [
            FunctionKind::Api,
            FunctionKind::Status,
            FunctionKind::Worker,
            FunctionKind::Sweeper,
        ] {
            // The template's worker runs attempts 10 s under its timeout.
            let mut settings = settings.clone();
            settings.worker_timeout = kind
                .default_timeout()
                .saturating_sub(Duration::from_secs(10));
            let budget = kind
                .sdk_budget(&settings, kind.default_timeout())
                .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            assert!(budget.attempt < budget.operation, "{}", kind.name());
        }
    }

    #[test]
    fn a_worker_whose_lease_fills_its_timeout_is_refused() {
        let mut settings = from(&[]).expect("valid").aws.settings;
        settings.worker_timeout = Duration::from_secs(58);
        let e = FunctionKind::Worker
            .sdk_budget(&settings, Duration::from_secs(60))
            .expect_err("no room after the lease");
        assert_eq!(e.calls, 2);
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
