//! The `demo` kind: for trying the system and for tests driven from outside.
//!
//! Input (every field optional):
//!
//! | field | meaning | default |
//! |---|---|---|
//! | `steps` | progress ticks, 0 to 1000 | 0 |
//! | `step_ms` | sleep per tick in milliseconds, 0 to 60000; `steps × step_ms` at most 10 minutes | 0 |
//! | `fail_attempts` | the first N attempts fail with a temporary error, 0 to 100 | 0 |
//! | `panic` | every attempt panics (the worker counts that as a temporary failure) | `false` |
//! | `reject` | `null`, or a reason: the job is rejected with it, worded as given | `null` |
//!
//! The order of effects is: `reject`, then `fail_attempts`, then `panic`, then the ticks. The
//! result, `{"steps": n, "attempt": a}`, shows which attempt produced it.
//!
//! A long demo job also needs a worker timeout that covers `steps × step_ms`; otherwise every
//! attempt times out and the job fails after its last attempt, as any slow job would.

use std::time::Duration;

use ackflow_core::{async_trait, FieldError, JobContext, Kind, ProcessError, Processor, Rejection};
use serde::Serialize;
use serde_json::{json, Value};

use crate::input::{self, Errors};

/// The `demo` processor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Demo;

impl Demo {
    /// The kind it serves.
    pub const KIND: &'static str = "demo";

    /// A demo processor.
    pub fn new() -> Self {
        Self
    }
}

/// A parsed `demo` input. Serializes to the JSON the processor reads, so tests and clients can
/// build inputs with `DemoInput { steps: 3, ..DemoInput::default() }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DemoInput {
    /// Progress ticks.
    pub steps: u32,
    /// Milliseconds slept per tick.
    pub step_ms: u32,
    /// How many first attempts fail with a temporary error.
    pub fail_attempts: u32,
    /// Whether every attempt panics.
    pub panic: bool,
    /// When set, the job is rejected with this reason.
    pub reject: Option<String>,
}

impl DemoInput {
    /// Most ticks.
    pub const MAX_STEPS: u32 = 1000;
    /// Longest tick, in milliseconds.
    pub const MAX_STEP_MS: u32 = 60_000;
    /// Longest whole run, `steps × step_ms`, in milliseconds: ten minutes.
    pub const MAX_TOTAL_MS: u64 = 10 * 60 * 1000;
    /// Most failing attempts.
    pub const MAX_FAIL_ATTEMPTS: u32 = 100;
    /// Longest rejection reason, in characters.
    pub const MAX_REASON_CHARS: usize = 500;

    const FIELDS: [&'static str; 5] = ["steps", "step_ms", "fail_attempts", "panic", "reject"];

    /// Parses `input`, reporting every invalid field with its JSON pointer (relative to the input).
    pub fn parse(input: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let Some(object) = input::object(input, "", &mut errors) else {
            return errors.finish(|| None);
        };
        input::reject_unknown(object, &Self::FIELDS, "", &mut errors);

        let number = |name: &str, max: u32, errors: &mut Errors| match object.get(name) {
            None => Some(0),
            Some(v) => input::whole_number(v, &input::member("", name), 0..=u64::from(max), errors)
                .and_then(|n| u32::try_from(n).ok()),
        };
        let steps = number("steps", Self::MAX_STEPS, &mut errors);
        let step_ms = number("step_ms", Self::MAX_STEP_MS, &mut errors);
        let fail_attempts = number("fail_attempts", Self::MAX_FAIL_ATTEMPTS, &mut errors);
        let panic = match object.get("panic") {
            None => Some(false),
            Some(v) => input::boolean(v, "/panic", &mut errors),
        };
        let reject = match object.get("reject") {
            None | Some(Value::Null) => Some(None),
            Some(v) => input::text(v, "/reject", Self::MAX_REASON_CHARS, &mut errors)
                .map(|s| Some(s.to_owned())),
        };
        if let (Some(steps), Some(step_ms)) = (steps, step_ms) {
            let total = u64::from(steps) * u64::from(step_ms);
            if total > Self::MAX_TOTAL_MS {
                errors.push(
                    "/step_ms",
                    format!(
                        "steps × step_ms is {total} ms; the whole run must take at most {} ms (10 minutes), \
                         so use fewer or shorter steps",
                        Self::MAX_TOTAL_MS
                    ),
                );
            }
        }
        errors.finish(|| {
            Some(Self {
                steps: steps?,
                step_ms: step_ms?,
                fail_attempts: fail_attempts?,
                panic: panic?,
                reject: reject?,
            })
        })
    }

    /// The input as the JSON the processor reads.
    pub fn to_json(&self) -> Value {
        json!({
            "steps": self.steps,
            "step_ms": self.step_ms,
            "fail_attempts": self.fail_attempts,
            "panic": self.panic,
            "reject": self.reject,
        })
    }
}

/// Why a demo attempt did not finish. Both are temporary: the job is tried again.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The input asked this attempt to fail.
    #[error("simulated temporary failure on attempt {0}")]
    SimulatedFailure(u32),
    /// The attempt lost the job (taken over, failed by the sweeper or cancelled) and stopped.
    #[error("stopped after step {done} of {steps}: this attempt no longer owns the job")]
    Abandoned {
        /// Ticks done.
        done: u32,
        /// Ticks asked for.
        steps: u32,
    },
}

#[async_trait]
impl Processor for Demo {
    fn kind(&self) -> Kind {
        crate::kind(Self::KIND)
    }

    fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>> {
        DemoInput::parse(input).map(drop)
    }

    async fn process(&self, input: Value, ctx: &JobContext) -> Result<Value, ProcessError> {
        let input = DemoInput::parse(&input).map_err(input::invalid_input)?;
        if let Some(reason) = input.reject {
            // The reason is the user's own words, so it is the detail as given.
            return Err(Rejection::new("rejected", "Rejected as requested", reason).into());
        }
        if ctx.attempt <= input.fail_attempts {
            return Err(ProcessError::transient(DemoError::SimulatedFailure(
                ctx.attempt,
            )));
        }
        if input.panic {
            panic!("demo job panicked on purpose (attempt {})", ctx.attempt);
        }
        let pause = Duration::from_millis(u64::from(input.step_ms));
        for step in 1..=input.steps {
            if ctx.is_abandoned() {
                return Err(ProcessError::transient(DemoError::Abandoned {
                    done: step - 1,
                    steps: input.steps,
                }));
            }
            tokio::time::sleep(pause).await;
            let percent = u8::try_from(step * 100 / input.steps).unwrap_or(100);
            ctx.progress(percent, format!("Step {step} of {}", input.steps))
                .await;
        }
        Ok(json!({ "steps": input.steps, "attempt": ctx.attempt }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_kind_is_demo() {
        assert_eq!(Demo::new().kind().as_str(), "demo");
    }

    #[test]
    fn an_input_built_in_rust_passes_its_own_validation() {
        let input = DemoInput {
            steps: 3,
            step_ms: 10,
            fail_attempts: 1,
            panic: false,
            reject: Some("no thanks".into()),
        };
        assert_eq!(DemoInput::parse(&input.to_json()), Ok(input.clone()));
        assert_eq!(
            serde_json::to_value(&input).unwrap(),
            input.to_json(),
            "Serialize and to_json agree"
        );
    }
}
