//! The deployment template's invariants: `template.yaml` at the workspace root, read as plain
//! YAML (it is written in CloudFormation's long form, without `!Ref`-style tags).
//!
//! CloudFormation cannot compute, so every derived value comes from a mapping keyed by the
//! parameter it derives from; these tests check every row of those mappings against every
//! allowed parameter value. Each check returns the violations it finds, and the tests that break
//! a copy of the template on purpose show that each check can fail.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use ackflow_aws::dynamo;
use ackflow_aws::schema::DLQ_RETENTION_SECS;
use ackflow_core::Settings;
use ackflow_lambda::app::env::FUNCTION_TIMEOUT;
use ackflow_lambda::{FunctionConfig, FunctionKind};
use serde_json::{json, Value};

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");

fn template() -> Value {
    let text = std::fs::read_to_string(TEMPLATE).expect("template.yaml is readable");
    serde_norway::from_str(&text).expect("template.yaml is YAML in long form")
}

/// A resource's properties (`Null` when absent).
fn props<'a>(t: &'a Value, resource: &str) -> &'a Value {
    &t["Resources"][resource]["Properties"]
}

fn of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"]
        .as_object()
        .expect("Resources is a map")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// A parameter's allowed values, as CloudFormation passes them (strings).
fn allowed(t: &Value, parameter: &str) -> Vec<String> {
    t["Parameters"][parameter]["AllowedValues"]
        .as_array()
        .unwrap_or_else(|| panic!("{parameter} has AllowedValues"))
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn default_of(t: &Value, parameter: &str) -> String {
    match &t["Parameters"][parameter]["Default"] {
        Value::String(s) => s.clone(),
        Value::Null => panic!("{parameter} has a default"),
        other => other.to_string(),
    }
}

/// Resolves a property value the way CloudFormation would with the given parameter values:
/// literals, `Ref` (parameters by value, resources as `<Name>`), `Fn::FindInMap`; anything
/// else (`Fn::GetAtt`, `Fn::Sub`, ...) as a placeholder naming it. `None`: a parameter without
/// a value.
fn resolve(t: &Value, v: &Value, params: &BTreeMap<String, String>) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(o) if o.len() == 1 => {
            let (f, arg) = o.iter().next()?;
            match f.as_str() {
                "Ref" => {
                    let name = arg.as_str()?;
                    if t["Parameters"].get(name).is_some() {
                        params.get(name).cloned()
                    } else {
                        Some(format!("<{name}>"))
                    }
                }
                "Fn::FindInMap" => {
                    let a = arg.as_array()?;
                    let map = resolve(t, &a[0], params)?;
                    let top = resolve(t, &a[1], params)?;
                    let second = resolve(t, &a[2], params)?;
                    resolve(t, &t["Mappings"][&map][&top][&second], params)
                }
                other => Some(format!("<{other}>")),
            }
        }
        _ => None,
    }
}

/// Every parameter at its default.
fn defaults(t: &Value) -> BTreeMap<String, String> {
    t["Parameters"]
        .as_object()
        .expect("Parameters is a map")
        .keys()
        .map(|k| (k.clone(), default_of(t, k)))
        .collect()
}

fn functions(t: &Value) -> Vec<&String> {
    of_type(t, "AWS::Serverless::Function")
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// A function's environment: the Globals' variables, then its own.
fn environment<'a>(t: &'a Value, function: &str) -> BTreeMap<&'a String, &'a Value> {
    let mut env = BTreeMap::new();
    for vars in [
        &t["Globals"]["Function"]["Environment"]["Variables"],
        &props(t, function)["Environment"]["Variables"],
    ] {
        if let Some(vars) = vars.as_object() {
            env.extend(vars.iter());
        }
    }
    env
}

fn resolved_environment(
    t: &Value,
    function: &str,
    params: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    environment(t, function)
        .into_iter()
        .map(|(k, v)| {
            let value = resolve(t, v, params).unwrap_or_else(|| panic!("{k} resolves"));
            // Resources stand for what CloudFormation would put there.
            let value = match value.as_str() {
                "<Queue>" => "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs".to_owned(),
                "<DeadLetterQueue>" => {
                    "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs-dlq".to_owned()
                }
                "<Table>" => "ackflow-Table-1".to_owned(),
                _ => value,
            };
            (k.clone(), value)
        })
        .collect()
}

/// The variables the functions' code reads, found by running the real configuration loader
/// with a lookup that records every name it is asked for, plus the log filter, which the log
/// subscriber reads itself (`EnvFilter::try_from_env`).
fn variables_read(values: &BTreeMap<String, String>) -> (BTreeSet<String>, Result<(), String>) {
    let asked = RefCell::new(BTreeSet::new());
    let loaded = FunctionConfig::from_lookup(|name| {
        asked.borrow_mut().insert(name.to_owned());
        values.get(name).cloned()
    });
    let mut names = asked.into_inner();
    names.insert(ackflow_lambda::telemetry::LOG_FILTER.to_owned());
    (names, loaded.map(drop).map_err(|e| e.to_string()))
}

// ------------------------------------------------------------------------------------ checks

/// The queue's visibility timeout is at least 6 x the worker function's timeout + the batching
/// window, for every allowed timeout and window; the functions are told the same visibility.
fn visibility_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let worker = props(t, "WorkerFunction");
    if worker["Timeout"] != json!({"Ref": "WorkerTimeout"}) {
        out.push("the worker's Timeout is not the WorkerTimeout parameter".to_owned());
    }
    let event = &worker["Events"]["Jobs"]["Properties"];
    if event["MaximumBatchingWindowInSeconds"] != json!({"Ref": "BatchWindow"}) {
        out.push("the worker's batching window is not the BatchWindow parameter".to_owned());
    }
    let largest_window = as_u64(&t["Parameters"]["BatchWindow"]["MaxValue"]).unwrap_or(u64::MAX);
    for timeout in allowed(t, "WorkerTimeout") {
        let params = BTreeMap::from([("WorkerTimeout".to_owned(), timeout.clone())]);
        let secs: u64 = timeout.parse().expect("a number");
        let visibility = resolve(t, &props(t, "Queue")["VisibilityTimeout"], &params)
            .and_then(|v| v.parse::<u64>().ok());
        match visibility {
            Some(v) if v >= 6 * secs + largest_window => {}
            other => out.push(format!(
                "WorkerTimeout {secs}: visibility {other:?} < 6 x {secs} + {largest_window}"
            )),
        }
        for function in functions(t) {
            let told = environment(t, function)
                .get(&ackflow_core::settings::env::VISIBILITY_TIMEOUT_SECS.to_owned())
                .and_then(|v| resolve(t, v, &params))
                .and_then(|v| v.parse::<u64>().ok());
            if told != visibility {
                out.push(format!(
                    "WorkerTimeout {secs}: {function} is told visibility {told:?}, the queue has {visibility:?}"
                ));
            }
        }
    }
    out
}

fn batch_item_failure_violations(t: &Value) -> Vec<String> {
    let event = &props(t, "WorkerFunction")["Events"]["Jobs"];
    let mut out = Vec::new();
    if event["Type"] != "SQS"
        || event["Properties"]["Queue"] != json!({"Fn::GetAtt": ["Queue", "Arn"]})
    {
        out.push("the worker's Jobs event is not the SQS event of Queue".to_owned());
    }
    let types = &event["Properties"]["FunctionResponseTypes"];
    if !types
        .as_array()
        .is_some_and(|a| a.contains(&json!("ReportBatchItemFailures")))
    {
        out.push(format!(
            "FunctionResponseTypes is {types}, without ReportBatchItemFailures"
        ));
    }
    out
}

/// The table's stream reaches the sweeper's fold as exactly-once folding needs it: new and old
/// images, job headers only, batches never bisected and retried until folded, the first record
/// not folded reported; the sweeper reads that stream alone.
fn stream_fold_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if props(t, "Table")["StreamSpecification"]["StreamViewType"] != "NEW_AND_OLD_IMAGES" {
        out.push("the table's stream does not carry new and old images".to_owned());
    }
    let stream = json!({"Fn::GetAtt": ["Table", "StreamArn"]});
    let mappings: Vec<_> = of_type(t, "AWS::Lambda::EventSourceMapping")
        .into_iter()
        .filter(|(_, m)| m["Properties"]["EventSourceArn"] == stream)
        .collect();
    let [(name, mapping)] = mappings[..] else {
        out.push(format!(
            "{} mappings of the table's stream, not one",
            mappings.len()
        ));
        return out;
    };
    let p = &mapping["Properties"];
    let expect = [
        ("FunctionName", json!({"Ref": "SweeperFunction"})),
        ("BisectBatchOnFunctionError", json!(false)),
        ("MaximumRetryAttempts", json!(-1)),
        ("FunctionResponseTypes", json!(["ReportBatchItemFailures"])),
    ];
    for (key, want) in expect {
        if p[key] != want {
            out.push(format!("{name}.{key} is {}, not {want}", p[key]));
        }
    }
    let header_only = json!({"dynamodb": {"Keys": {"SK": {"S": [dynamo::HEADER]}}}});
    let patterns: Vec<Value> = p["FilterCriteria"]["Filters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| serde_json::from_str(f["Pattern"].as_str()?).ok())
        .collect();
    if patterns != [header_only.clone()] {
        out.push(format!("{name} filters {patterns:?}, not {header_only}"));
    }
    let reads_stream = props(t, "SweeperFunction")["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|policy| policy["Statement"].as_array().into_iter().flatten())
        .filter(|s| {
            s["Action"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("dynamodb:GetRecords")))
        })
        .map(|s| s["Resource"].clone())
        .collect::<Vec<_>>();
    if reads_stream != [stream.clone()] {
        out.push(format!(
            "the sweeper reads {reads_stream:?}, not the table's stream alone"
        ));
    }
    out
}

/// maxReceiveCount = MaxAttempts + Settings::RECEIVE_SLACK (> 1) for every allowed MaxAttempts, and the
/// functions get their attempt budget from the same parameter.
fn redrive_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let policy = &props(t, "Queue")["RedrivePolicy"];
    if policy["deadLetterTargetArn"] != json!({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}) {
        out.push("the redrive policy does not target DeadLetterQueue".to_owned());
    }
    for attempts in allowed(t, "MaxAttempts") {
        let params = BTreeMap::from([("MaxAttempts".to_owned(), attempts.clone())]);
        let n: u32 = attempts.parse().expect("a number");
        let count =
            resolve(t, &policy["maxReceiveCount"], &params).and_then(|v| v.parse::<u32>().ok());
        if count != Some(n + Settings::RECEIVE_SLACK) || count <= Some(1) {
            out.push(format!(
                "MaxAttempts {n}: maxReceiveCount {count:?}, not {}",
                n + Settings::RECEIVE_SLACK
            ));
        }
    }
    for function in functions(t) {
        let budget = environment(t, function)
            .get(&ackflow_core::settings::env::MAX_ATTEMPTS.to_owned())
            .copied();
        if budget != Some(&json!({"Ref": "MaxAttempts"})) {
            out.push(format!(
                "{function}: ACKFLOW_MAX_ATTEMPTS is {budget:?}, not the MaxAttempts parameter"
            ));
        }
    }
    out
}

fn log_group_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for function in functions(t) {
        let group = &props(t, function)["LoggingConfig"]["LogGroup"]["Ref"];
        let Some(group) = group.as_str() else {
            out.push(format!(
                "{function} has no LoggingConfig.LogGroup of this template"
            ));
            continue;
        };
        let resource = &t["Resources"][group];
        if resource["Type"] != "AWS::Logs::LogGroup"
            || resource["Properties"]["RetentionInDays"].is_null()
        {
            out.push(format!(
                "{function}'s log group {group} is not a log group with a retention"
            ));
        }
    }
    out
}

/// No IAM action anywhere with a wildcard, and no `NotAction` (which grants everything else).
fn wildcard_action_violations(t: &Value) -> Vec<String> {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    let here = format!("{path}/{k}");
                    if k == "NotAction" {
                        out.push(format!("{here}: NotAction"));
                    }
                    if k == "Action" {
                        let actions: Vec<&Value> = match child {
                            Value::Array(a) => a.iter().collect(),
                            one => vec![one],
                        };
                        for a in actions {
                            if a.as_str().is_none_or(|s| s.contains('*')) {
                                out.push(format!("{here}: {a}"));
                            }
                        }
                    }
                    walk(child, &here, out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, &format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&t["Resources"], "Resources", &mut out);
    out
}

/// Each function is given exactly the variables its code reads, and the template's values (at
/// the defaults, and at every allowed worker timeout) make a configuration the code accepts.
fn environment_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut cases = vec![defaults(t)];
    for timeout in allowed(t, "WorkerTimeout") {
        let mut params = defaults(t);
        params.insert("WorkerTimeout".to_owned(), timeout);
        cases.push(params);
    }
    for function in functions(t) {
        for params in &cases {
            let values = resolved_environment(t, function, params);
            let (read, loaded) = variables_read(&values);
            let set: BTreeSet<String> = values.keys().cloned().collect();
            for missing in read.difference(&set) {
                out.push(format!(
                    "{function} reads {missing}, which the template does not set"
                ));
            }
            for extra in set.difference(&read) {
                out.push(format!(
                    "{function} is given {extra}, which its code does not read"
                ));
            }
            if let Err(e) = loaded {
                out.push(format!(
                    "{function} would not start with WorkerTimeout {}: {e}",
                    params["WorkerTimeout"]
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Long-polls and the worker do not compete: every function has its own reservation, the
/// worker's event source stays below its own, and the status function outlives a long-poll.
fn concurrency_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let event = &props(t, "WorkerFunction")["Events"]["Jobs"]["Properties"];
    for reserved in allowed(t, "WorkerReservedConcurrency") {
        let params = BTreeMap::from([("WorkerReservedConcurrency".to_owned(), reserved.clone())]);
        let r: u64 = reserved.parse().expect("a number");
        let max = resolve(t, &event["ScalingConfig"]["MaximumConcurrency"], &params)
            .and_then(|v| v.parse::<u64>().ok());
        if !max.is_some_and(|m| (2..r).contains(&m)) {
            out.push(format!(
                "reservation {r}: MaximumConcurrency {max:?} is not from 2 to {}",
                r - 1
            ));
        }
    }
    for function in functions(t) {
        if props(t, function)["ReservedConcurrentExecutions"].is_null() {
            out.push(format!("{function} has no ReservedConcurrentExecutions"));
        }
    }
    let status_min = as_u64(&t["Parameters"]["StatusTimeout"]["MinValue"]);
    let cap_max = as_u64(&t["Parameters"]["LongPollCapSecs"]["MaxValue"]);
    if props(t, "StatusFunction")["Timeout"] != json!({"Ref": "StatusTimeout"})
        || !matches!((status_min, cap_max), (Some(s), Some(c)) if s > c)
    {
        out.push(format!(
            "the status timeout (at least {status_min:?}) does not exceed the long-poll cap (at most {cap_max:?})"
        ));
    }
    out
}

/// The function each resource runs.
fn kind_of(function: &str) -> FunctionKind {
    match function {
        "ApiFunction" => FunctionKind::Api,
        "StatusFunction" => FunctionKind::Status,
        "WorkerFunction" => FunctionKind::Worker,
        "SweeperFunction" => FunctionKind::Sweeper,
        other => panic!("{other} is not one of the four functions"),
    }
}

/// A number parameter's edges and default, or its allowed values.
fn values_of(t: &Value, parameter: &str) -> Vec<String> {
    let p = &t["Parameters"][parameter];
    if p["AllowedValues"].is_array() {
        return allowed(t, parameter);
    }
    let mut values: Vec<String> = [&p["MinValue"], &p["MaxValue"]]
        .into_iter()
        .filter_map(as_u64)
        .map(|v| v.to_string())
        .collect();
    values.push(default_of(t, parameter));
    values
}

/// Every function is told its own timeout, and at every timeout the template allows (with the
/// knobs that take time from it at their worst: the longest long-poll cap, the worker's attempt
/// and lease), the SDK's calls still fit in it with the margin to answer
/// ([`FunctionKind::sdk_budget`]); the code's default timeout is the template's.
fn sdk_budget_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for function in functions(t) {
        let kind = kind_of(function);
        let own = &props(t, function)["Environment"]["Variables"][FUNCTION_TIMEOUT];
        let timeout = &props(t, function)["Timeout"];
        if own != timeout && resolve(t, own, &defaults(t)) != resolve(t, timeout, &defaults(t)) {
            out.push(format!(
                "{function} is told {FUNCTION_TIMEOUT} {own}, its Timeout is {timeout}"
            ));
        }
        let default = resolve(t, timeout, &defaults(t)).and_then(|v| v.parse::<u64>().ok());
        if default != Some(kind.default_timeout().as_secs()) {
            out.push(format!(
                "{function}: the template's default timeout {default:?} is not the code's {:?}",
                kind.default_timeout()
            ));
        }
        let mut cases = vec![defaults(t)];
        if let Some(parameter) = timeout["Ref"].as_str() {
            for value in values_of(t, parameter) {
                let mut params = defaults(t);
                params.insert(parameter.to_owned(), value);
                let cap = &t["Parameters"]["LongPollCapSecs"]["MaxValue"];
                params.insert(
                    "LongPollCapSecs".to_owned(),
                    as_u64(cap).unwrap_or(0).to_string(),
                );
                cases.push(params);
            }
        }
        for params in cases {
            let values = resolved_environment(t, function, &params);
            let config = match FunctionConfig::from_lookup(|name| values.get(name).cloned()) {
                Ok(config) => config,
                Err(e) => {
                    out.push(format!("{function} would not start: {e}"));
                    continue;
                }
            };
            let Some(timeout) = config.function_timeout else {
                out.push(format!("{function} is not told its timeout"));
                continue;
            };
            if let Err(e) = kind.sdk_budget(&config.aws.settings, timeout) {
                out.push(format!("{function} at {timeout:?}: {e}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The table is the one `ackflow_aws::schema::create_table` makes, and what holds state is kept
/// when the stack goes.
fn storage_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["Table", "Queue", "DeadLetterQueue"] {
        let r = &t["Resources"][name];
        if r["DeletionPolicy"] != "Retain" || r["UpdateReplacePolicy"] != "Retain" {
            out.push(format!("{name} is not retained"));
        }
    }
    let table = props(t, "Table");
    let key = |pk: &str, sk: &str| json!([{"AttributeName": pk, "KeyType": "HASH"}, {"AttributeName": sk, "KeyType": "RANGE"}]);
    if table["KeySchema"] != key(dynamo::PK, dynamo::SK) {
        out.push(format!("table key {}", table["KeySchema"]));
    }
    let expected = [
        (dynamo::LIST_INDEX, dynamo::LIST_PK, dynamo::LIST_SK),
        (dynamo::SWEEP_INDEX, dynamo::SWEEP_PK, dynamo::SWEEP_SK),
        (dynamo::OPEN_INDEX, dynamo::OPEN_PK, dynamo::OPEN_SK),
    ];
    let indexes = table["GlobalSecondaryIndexes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if indexes.len() != expected.len() {
        out.push(format!(
            "{} global secondary indexes, not {}",
            indexes.len(),
            expected.len()
        ));
    }
    for (name, pk, sk) in expected {
        let found = indexes.iter().find(|i| i["IndexName"] == name);
        match found {
            Some(i)
                if i["KeySchema"] == key(pk, sk) && i["Projection"]["ProjectionType"] == "ALL" => {}
            _ => out.push(format!(
                "index {name} is not ({pk}, {sk}) with projection ALL"
            )),
        }
    }
    let types: BTreeMap<&str, &str> = table["AttributeDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["AttributeName"].as_str()?, d["AttributeType"].as_str()?)))
        .collect();
    let numeric = [dynamo::SWEEP_SK];
    for attr in [
        dynamo::PK,
        dynamo::SK,
        dynamo::LIST_PK,
        dynamo::LIST_SK,
        dynamo::SWEEP_PK,
        dynamo::SWEEP_SK,
        dynamo::OPEN_PK,
        dynamo::OPEN_SK,
    ] {
        let want = if numeric.contains(&attr) { "N" } else { "S" };
        if types.get(attr) != Some(&want) {
            out.push(format!(
                "attribute {attr} is {:?}, not {want}",
                types.get(attr)
            ));
        }
    }
    if table["BillingMode"] != "PAY_PER_REQUEST"
        || table["TimeToLiveSpecification"]
            != json!({"AttributeName": dynamo::TTL, "Enabled": true})
        || table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] != true
        || table["SSESpecification"]["SSEEnabled"] != true
    {
        out.push("the table is not on-demand with TTL, point-in-time recovery and SSE".to_owned());
    }
    let dlq = props(t, "DeadLetterQueue");
    if as_u64(&dlq["MessageRetentionPeriod"]) != Some(u64::from(DLQ_RETENTION_SECS)) {
        out.push(format!(
            "the DLQ keeps messages {} s",
            dlq["MessageRetentionPeriod"]
        ));
    }
    for q in ["Queue", "DeadLetterQueue"] {
        if props(t, q)["SqsManagedSseEnabled"] != true {
            out.push(format!("{q} is not encrypted"));
        }
    }
    out
}

/// The `[package.metadata.lambda.deploy]` of each function's `Cargo.toml` (for `cargo lambda
/// deploy` without SAM): its `env` list, `memory` and `timeout`, read line by line (one
/// `"NAME=value",` a line, as written there).
fn cargo_lambda_deploy(binary: &str) -> (BTreeMap<String, String>, Option<String>, Option<String>) {
    let path = format!(
        "{}/../../functions/{binary}/Cargo.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("the function's Cargo.toml");
    let section = text
        .split("[package.metadata.lambda.deploy]")
        .nth(1)
        .map(|rest| rest.split("\n[").next().unwrap_or(rest))
        .unwrap_or_default();
    let mut env = BTreeMap::new();
    let (mut memory, mut timeout) = (None, None);
    for line in section.lines().map(str::trim) {
        if let Some(pair) = line.strip_prefix('"').and_then(|l| l.strip_suffix("\",")) {
            if let Some((k, v)) = pair.split_once('=') {
                env.insert(k.to_owned(), v.to_owned());
            }
        } else if let Some(v) = line.strip_prefix("memory = ") {
            memory = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("timeout = ") {
            timeout = Some(v.to_owned());
        }
    }
    (env, memory, timeout)
}

/// `cargo lambda deploy` sets what the template sets at its defaults: the same variables with
/// the same values (but the queue and table, which come from the deployment's own env file),
/// the same memory and timeout.
fn cargo_lambda_violations(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let params = defaults(t);
    for (name, r) in of_type(t, "AWS::Serverless::Function") {
        let binary = r["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_default();
        let (env, memory, timeout) = cargo_lambda_deploy(binary);
        let mut expected = resolved_environment(t, name, &params);
        for own in [
            ackflow_aws::env::QUEUE_URL,
            ackflow_aws::env::DLQ_URL,
            ackflow_aws::env::TABLE,
        ] {
            expected.remove(own);
        }
        if env != expected {
            out.push(format!(
                "functions/{binary}/Cargo.toml deploys env {env:?}, the template {expected:?}"
            ));
        }
        for (what, got) in [("MemorySize", memory), ("Timeout", timeout)] {
            let want = resolve(t, &r["Properties"][what], &params);
            if got != want {
                out.push(format!(
                    "functions/{binary}/Cargo.toml: {what} {got:?}, the template {want:?}"
                ));
            }
        }
    }
    out
}

/// The HTTP API routes exactly what the Router serves (as its OpenAPI document lists it): writes
/// to the api function, reads to the status function, and only the page, its assets and the
/// document without the authorizer.
fn route_violations(t: &Value) -> Vec<String> {
    const PUBLIC: [&str; 3] = ["GET /", "GET /assets/{file}", "GET /openapi.json"];
    let document = serde_json::to_value(ackflow_http::openapi()).expect("the document serializes");
    let served: BTreeSet<String> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|m| item.get(*m).is_some())
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    let mut out = Vec::new();
    let mut routed = BTreeSet::new();
    for (name, route) in of_type(t, "AWS::ApiGatewayV2::Route") {
        let p = &route["Properties"];
        let Some(key) = p["RouteKey"].as_str() else {
            out.push(format!("{name}: RouteKey is not a plain string"));
            continue;
        };
        routed.insert(key.to_owned());
        let wanted = if key.starts_with("GET ") {
            "StatusIntegration"
        } else {
            "ApiIntegration"
        };
        if p["Target"] != json!({ "Fn::Sub": format!("integrations/${{{wanted}}}") }) {
            out.push(format!("{name} ({key}) does not target {wanted}"));
        }
        let public = p["AuthorizationType"] == "NONE";
        if public != PUBLIC.contains(&key) {
            out.push(format!("{name} ({key}): public is {public}"));
        }
    }
    for missing in served.difference(&routed) {
        out.push(format!(
            "the Router serves {missing} but the HTTP API does not route it"
        ));
    }
    for extra in routed.difference(&served) {
        out.push(format!(
            "the HTTP API routes {extra}, which the Router does not serve"
        ));
    }
    out
}

// ------------------------------------------------------------------------------------- tests

#[test]
fn the_visibility_timeout_covers_six_worker_timeouts_and_the_batching_window() {
    assert_eq!(visibility_violations(&template()), Vec::<String>::new());
}

#[test]
fn the_worker_reports_batch_item_failures() {
    assert_eq!(
        batch_item_failure_violations(&template()),
        Vec::<String>::new()
    );
}

#[test]
fn the_tables_stream_reaches_the_fold_as_exactly_once_folding_needs() {
    assert_eq!(stream_fold_violations(&template()), Vec::<String>::new());
}

#[test]
fn max_receive_count_is_the_attempt_budget_plus_slack() {
    assert_eq!(redrive_violations(&template()), Vec::<String>::new());
}

#[test]
fn every_function_logs_to_a_group_with_a_retention() {
    assert_eq!(log_group_violations(&template()), Vec::<String>::new());
}

#[test]
fn no_iam_action_has_a_wildcard() {
    assert_eq!(
        wildcard_action_violations(&template()),
        Vec::<String>::new()
    );
}

#[test]
fn every_function_gets_exactly_the_variables_its_code_reads() {
    assert_eq!(environment_violations(&template()), Vec::<String>::new());
}

#[test]
fn long_polls_cannot_starve_the_worker() {
    assert_eq!(concurrency_violations(&template()), Vec::<String>::new());
}

#[test]
fn every_function_answers_before_its_timeout_even_when_every_sdk_call_hangs() {
    assert_eq!(sdk_budget_violations(&template()), Vec::<String>::new());
}

#[test]
fn a_timeout_too_short_for_the_sdk_calls_is_caught() {
    let t = broken(|t| t["Parameters"]["ApiTimeout"]["MinValue"] = json!(3));
    let found = sdk_budget_violations(&t);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("ApiFunction at 3s"), "{found:?}");
    let t = broken(|t| t["Parameters"]["StatusTimeout"]["MinValue"] = json!(21));
    assert_eq!(sdk_budget_violations(&t).len(), 1);
    let t = broken(|t| {
        t["Resources"]["SweeperFunction"]["Properties"]["Environment"]["Variables"]
            [FUNCTION_TIMEOUT] = json!("20");
    });
    let found = sdk_budget_violations(&t);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("its Timeout is 55"), "{found:?}");
}

#[test]
fn the_table_and_queues_are_the_schema_modules_and_are_retained() {
    assert_eq!(storage_violations(&template()), Vec::<String>::new());
}

#[test]
fn cargo_lambda_deploys_what_the_template_deploys_by_default() {
    assert_eq!(cargo_lambda_violations(&template()), Vec::<String>::new());
}

#[test]
fn a_cargo_lambda_setting_that_drifts_from_the_template_is_caught() {
    let t = broken(|t| t["Parameters"]["MaxAttempts"]["Default"] = json!(3));
    let found = cargo_lambda_violations(&t);
    assert_eq!(found.len(), 4, "{found:?}");
}

#[test]
fn the_template_has_the_four_functions_built_by_cargo_lambda_for_arm64() {
    let t = template();
    let mut names: Vec<&String> = functions(&t);
    names.sort();
    assert_eq!(
        names,
        [
            "ApiFunction",
            "StatusFunction",
            "SweeperFunction",
            "WorkerFunction"
        ]
    );
    assert_eq!(t["Globals"]["Function"]["Architectures"], json!(["arm64"]));
    assert_eq!(t["Globals"]["Function"]["Runtime"], "provided.al2023");
    assert_eq!(t["Globals"]["Function"]["Tracing"], "Active");
    for (name, r) in of_type(&t, "AWS::Serverless::Function") {
        let binary = r["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .expect("a binary");
        assert_eq!(r["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}");
        assert_eq!(
            r["Properties"]["CodeUri"],
            format!("functions/{binary}"),
            "{name}"
        );
    }
}

// A broken copy of the template fails each check: the checks can fail.

fn broken(edit: impl FnOnce(&mut Value)) -> Value {
    let mut t = template();
    edit(&mut t);
    t
}

#[test]
fn a_stream_mapping_that_bisects_or_gives_up_or_reads_everything_is_caught() {
    let t = broken(|t| {
        t["Resources"]["ReportFoldMapping"]["Properties"]["BisectBatchOnFunctionError"] =
            json!(true);
        t["Resources"]["ReportFoldMapping"]["Properties"]["MaximumRetryAttempts"] = json!(3);
        t["Resources"]["ReportFoldMapping"]["Properties"]["FilterCriteria"] = json!(null);
        t["Resources"]["Table"]["Properties"]["StreamSpecification"] = json!(null);
    });
    assert_eq!(
        stream_fold_violations(&t).len(),
        4,
        "{:?}",
        stream_fold_violations(&t)
    );
}

#[test]
fn a_visibility_timeout_of_one_worker_timeout_is_caught() {
    let t = broken(|t| t["Mappings"]["Worker"]["60"]["VisibilitySecs"] = json!(60));
    let found = visibility_violations(&t);
    assert!(
        found
            .iter()
            .any(|v| v.contains("WorkerTimeout 60: visibility Some(60)")),
        "{found:?}"
    );
}

#[test]
fn a_missing_batch_item_failure_report_is_caught() {
    let t = broken(|t| {
        t["Resources"]["WorkerFunction"]["Properties"]["Events"]["Jobs"]["Properties"]
            ["FunctionResponseTypes"] = json!([]);
    });
    assert_eq!(batch_item_failure_violations(&t).len(), 1);
}

#[test]
fn a_max_receive_count_of_one_is_caught() {
    let t = broken(|t| {
        t["Resources"]["Queue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = json!(1)
    });
    assert_eq!(
        redrive_violations(&t).len(),
        allowed(&t, "MaxAttempts").len()
    );
}

#[test]
fn a_function_without_a_retained_log_group_is_caught() {
    let t = broken(|t| {
        t["Resources"]["SweeperLogGroup"]["Properties"]
            .as_object_mut()
            .expect("properties")
            .remove("RetentionInDays");
    });
    assert_eq!(log_group_violations(&t).len(), 1);
}

#[test]
fn a_wildcard_action_is_caught() {
    let t = broken(|t| {
        t["Resources"]["ApiFunction"]["Properties"]["Policies"][0]["Statement"][1]["Action"] =
            json!(["sqs:*"]);
    });
    let found = wildcard_action_violations(&t);
    assert_eq!(found.len(), 1, "{found:?}");
}

#[test]
fn a_variable_the_code_reads_but_the_template_does_not_set_is_caught() {
    let t = broken(|t| {
        t["Globals"]["Function"]["Environment"]["Variables"]
            .as_object_mut()
            .expect("variables")
            .remove(ackflow_core::settings::env::BODY_LIMIT_BYTES);
    });
    let found = environment_violations(&t);
    assert!(
        found
            .iter()
            .any(|v| v.contains("reads ACKFLOW_BODY_LIMIT_BYTES")),
        "{found:?}"
    );
}

#[test]
fn a_variable_the_code_does_not_read_is_caught() {
    let t = broken(|t| {
        t["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"]
            ["ACKFLOW_UNUSED"] = json!("1");
    });
    let found = environment_violations(&t);
    assert_eq!(
        found,
        ["WorkerFunction is given ACKFLOW_UNUSED, which its code does not read"]
    );
}

#[test]
fn an_esm_allowed_as_many_instances_as_the_reservation_is_caught() {
    let t = broken(|t| t["Mappings"]["WorkerScaling"]["10"]["MaximumConcurrency"] = json!(10));
    assert_eq!(concurrency_violations(&t).len(), 1);
}

#[test]
fn a_table_index_that_differs_from_the_schema_is_caught() {
    let t = broken(|t| {
        t["Resources"]["Table"]["Properties"]["GlobalSecondaryIndexes"][1]["KeySchema"][1]
            ["AttributeName"] = json!("SweepAt");
    });
    assert_eq!(storage_violations(&t).len(), 1);
}

#[test]
fn the_http_api_routes_exactly_what_the_router_serves() {
    assert_eq!(route_violations(&template()), Vec::<String>::new());
}

#[test]
fn a_route_the_router_serves_but_the_api_lacks_is_caught() {
    let t = broken(|t| {
        t["Resources"]
            .as_object_mut()
            .expect("resources")
            .remove("ReportRoute");
    });
    let found = route_violations(&t);
    assert!(
        found.iter().any(|v| v.contains("GET /v1/report")),
        "{found:?}"
    );
}
