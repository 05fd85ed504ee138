//! A counting proxy between a function and moto server: every AWS call the function makes goes
//! through it, and [`Tally`] keeps how many of each operation there were and the DynamoDB
//! capacity units they would have consumed on AWS.
//!
//! Capacity is computed from the items on the wire by DynamoDB's published rules, because moto
//! does not report it:
//!
//! - a write request unit per started KB of the item written; twice that inside
//!   `TransactWriteItems`; an `UpdateItem` or `DeleteItem` (whose item is not on the wire)
//!   counts one unit per call, and an `Update` or `ConditionCheck` in a transaction two: every
//!   such item ackflow writes is a gauge, a counter or a stock item, all well under 1 KB;
//! - a read request unit per started 4 KB of what a consistent `GetItem` or `Query` returned
//!   (a query's items summed first), half that for an eventually consistent one;
//! - writes to global secondary indexes are not counted here: they depend on which indexed
//!   attributes changed (docs/BENCHMARKS.md lists them per write).
//!
//! moto answers every request with `connection: close`. The proxy hides that from the function
//! by default ([`Connections::KeepAlive`]): it takes request after request on a connection, each
//! to moto over a connection of its own, and answers `connection: keep-alive`, so the function
//! reuses its connections as it does on AWS, where the SDK keeps them for the instance's life.
//! [`Connections::Close`] passes moto's closing on, for a measure of what a new connection per
//! call costs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Calls and capacity seen so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Calls by `service:Operation` (`dynamodb:PutItem`, `sqs:SendMessage`).
    pub calls: BTreeMap<String, u64>,
    /// DynamoDB write request units, base table only.
    pub write_units: f64,
    /// DynamoDB read request units.
    pub read_units: f64,
}

impl Counts {
    /// Every call, whatever its operation.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut calls = self.calls.clone();
        for (op, n) in &earlier.calls {
            if let Some(now) = calls.get_mut(op) {
                *now = now.saturating_sub(*n);
            }
        }
        calls.retain(|_, n| *n > 0);
        Counts {
            calls,
            write_units: self.write_units - earlier.write_units,
            read_units: self.read_units - earlier.read_units,
        }
    }

    fn add(&mut self, call: &Call) {
        *self.calls.entry(call.operation.clone()).or_default() += 1;
        self.write_units += call.write_units;
        self.read_units += call.read_units;
    }
}

/// The running totals of a [`start`]ed proxy.
#[derive(Debug, Default)]
pub struct Tally(Mutex<Counts>);

impl Tally {
    /// A copy of the totals now.
    pub fn snapshot(&self) -> Counts {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: &Call) {
        if let Ok(mut counts) = self.0.lock() {
            counts.add(call);
        }
    }
}

/// Whether the function's connections to the proxy outlive a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connections {
    /// One request after another on a connection, as on AWS.
    #[default]
    KeepAlive,
    /// A connection per request, as moto has it.
    Close,
}

/// Starts the proxy on 127.0.0.1 in front of `upstream`; returns its address and its tally.
pub async fn start(
    upstream: SocketAddr,
    connections: Connections,
) -> std::io::Result<(SocketAddr, Arc<Tally>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tally = Arc::new(Tally::default());
    let counting = Arc::clone(&tally);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let tally = Arc::clone(&counting);
            tokio::spawn(async move {
                // A broken exchange is the function's to see (its SDK reports it); the proxy
                // only drops the connection.
                let _ = relay(client, upstream, &tally, connections).await;
            });
        }
    });
    Ok((addr, tally))
}

/// The requests of one connection through to `upstream` and their answers back, tallied.
async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    tally: &Tally,
    connections: Connections,
) -> std::io::Result<()> {
    loop {
        let request = match read_message(&mut client).await {
            Ok(request) => request,
            // The function closed a connection it kept: done with it.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut server = TcpStream::connect(upstream).await?;
        server.write_all(&request.raw).await?;
        let answer = read_message(&mut server).await?;
        // Tallied before the function has its answer, so a snapshot taken after an invocation
        // holds every call it made.
        tally.record(&Call::of(&request, &answer));
        match connections {
            Connections::Close => {
                client.write_all(&answer.raw).await?;
                return client.shutdown().await;
            }
            Connections::KeepAlive => client.write_all(&kept_alive(&answer)).await?,
        }
    }
}

/// `answer` with its `connection: close` (moto's) turned into `connection: keep-alive`.
fn kept_alive(answer: &Message) -> Vec<u8> {
    let head = String::from_utf8_lossy(&answer.raw[..answer.body_at]);
    let head: String = head
        .split_inclusive("\r\n")
        .map(|line| match line.split_once(':') {
            Some((name, _)) if name.trim().eq_ignore_ascii_case("connection") => {
                "connection: keep-alive\r\n".to_owned()
            }
            _ => line.to_owned(),
        })
        .collect();
    let mut raw = head.into_bytes();
    raw.extend_from_slice(answer.body());
    raw
}

/// An HTTP/1.1 message as read off a connection.
#[derive(Debug)]
struct Message {
    /// Every byte, head and body, to pass on unchanged.
    raw: Vec<u8>,
    /// Header names (lowercase) and values.
    headers: BTreeMap<String, String>,
    /// Where the body starts in `raw`.
    body_at: usize,
}

impl Message {
    fn body(&self) -> &[u8] {
        &self.raw[self.body_at..]
    }
}

/// Reads one message: its head, then `content-length` bytes of body (or, without that
/// header, everything until the peer closes).
async fn read_message(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Message> {
    let mut raw = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let headers: BTreeMap<String, String> = String::from_utf8_lossy(&raw[..head_end])
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    match headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(length) => {
            while raw.len() < head_end + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                raw.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut raw).await?;
        }
    }
    Ok(Message {
        raw,
        headers,
        body_at: head_end,
    })
}

/// One call as tallied.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    operation: String,
    write_units: f64,
    read_units: f64,
}

impl Call {
    fn of(request: &Message, answer: &Message) -> Call {
        // The JSON protocols name the operation in `x-amz-target`: `DynamoDB_20120810.PutItem`,
        // `AmazonSQS.SendMessage`.
        let (service, operation) = request
            .headers
            .get("x-amz-target")
            .and_then(|t| t.split_once('.'))
            .map(|(prefix, op)| {
                let service = if prefix.starts_with("DynamoDB") {
                    "dynamodb"
                } else if prefix.starts_with("AmazonSQS") {
                    "sqs"
                } else {
                    prefix
                };
                (service.to_owned(), op.to_owned())
            })
            .unwrap_or_else(|| ("other".to_owned(), "request".to_owned()));
        let (mut write_units, mut read_units) = (0.0, 0.0);
        if service == "dynamodb" {
            let sent: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
            let got: Value = serde_json::from_slice(answer.body()).unwrap_or(Value::Null);
            write_units = write_units_of(&operation, &sent);
            read_units = read_units_of(&operation, &sent, &got);
        }
        Call {
            operation: format!("{service}:{operation}"),
            write_units,
            read_units,
        }
    }
}

fn write_units_of(operation: &str, sent: &Value) -> f64 {
    match operation {
        "PutItem" => kb_units(item_size(&sent["Item"]), 1024),
        "UpdateItem" | "DeleteItem" => 1.0,
        "TransactWriteItems" => sent["TransactItems"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| match item.get("Put") {
                        Some(put) => 2.0 * kb_units(item_size(&put["Item"]), 1024),
                        None => 2.0,
                    })
                    .sum()
            })
            .unwrap_or(0.0),
        "BatchWriteItem" => sent["RequestItems"]
            .as_object()
            .map(|tables| {
                tables
                    .values()
                    .flat_map(|requests| requests.as_array().cloned().unwrap_or_default())
                    .map(|request| match request.pointer("/PutRequest/Item") {
                        Some(item) => kb_units(item_size(item), 1024),
                        None => 1.0,
                    })
                    .sum()
            })
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

fn read_units_of(operation: &str, sent: &Value, got: &Value) -> f64 {
    let consistent = sent["ConsistentRead"].as_bool().unwrap_or(false);
    let per_4kb = if consistent { 1.0 } else { 0.5 };
    match operation {
        // A read that finds nothing still costs its minimum.
        "GetItem" => per_4kb * kb_units(item_size(&got["Item"]), 4096).max(1.0),
        "Query" | "Scan" => {
            let total: usize = got["Items"]
                .as_array()
                .map(|items| items.iter().map(item_size).sum())
                .unwrap_or(0);
            per_4kb * kb_units(total, 4096).max(1.0)
        }
        _ => 0.0,
    }
}

/// `size` in started blocks of `block` bytes.
fn kb_units(size: usize, block: usize) -> f64 {
    size.div_ceil(block) as f64
}

/// An item's size as DynamoDB counts it: each attribute's name and value.
fn item_size(item: &Value) -> usize {
    item.as_object()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| name.len() + value_size(value))
                .sum()
        })
        .unwrap_or(0)
}

/// The size of one attribute value in DynamoDB JSON (`{"S": "…"}`, `{"N": "…"}`, …).
fn value_size(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), inner) {
        ("S", Value::String(s)) => s.len(),
        // About one byte per two significant digits, plus one.
        ("N", Value::String(n)) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        ("B", Value::String(b64)) => b64.len() * 3 / 4,
        ("BOOL" | "NULL", _) => 1,
        ("SS" | "NS" | "BS", Value::Array(items)) => {
            items.iter().map(|s| s.as_str().map_or(0, str::len)).sum()
        }
        ("M", Value::Object(map)) => {
            3 + map
                .iter()
                .map(|(name, v)| name.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        ("L", Value::Array(items)) => 3 + items.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_item_is_its_names_and_values() {
        let item = json!({"PK": {"S": "JOB#1"}, "revision": {"N": "12"}, "ok": {"BOOL": true}});
        assert_eq!(item_size(&item), 2 + 5 + 8 + 2 + 2 + 1);
    }

    #[test]
    fn a_transaction_costs_two_units_per_started_kb_of_each_item() {
        let big = json!({"PK": {"S": "x".repeat(1500)}});
        let sent = json!({"TransactItems": [
            {"Put": {"Item": big}},
            {"Update": {"Key": {}}},
        ]});
        assert_eq!(write_units_of("TransactWriteItems", &sent), 4.0 + 2.0);
        assert_eq!(
            write_units_of("PutItem", &json!({"Item": {"PK": {"S": "a"}}})),
            1.0
        );
    }

    #[test]
    fn a_consistent_query_costs_a_unit_per_started_4_kb_of_everything_it_returned() {
        let item = json!({"PK": {"S": "y".repeat(3000)}});
        let got = json!({"Items": [item.clone(), item]});
        assert_eq!(
            read_units_of("Query", &json!({"ConsistentRead": true}), &got),
            2.0
        );
        assert_eq!(read_units_of("Query", &json!({}), &got), 1.0);
        assert_eq!(read_units_of("GetItem", &json!({}), &json!({})), 0.5);
    }

    /// An upstream like moto: answers each request `{}` and closes its connection.
    async fn closing_upstream() -> SocketAddr {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = upstream.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                let request = read_message(&mut s).await.expect("request");
                assert_eq!(request.body(), br#"{"Item":{"PK":{"S":"a"}}}"#);
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await
                    .expect("answer");
            }
        });
        addr
    }

    async fn put_item(c: &mut TcpStream) -> Message {
        let body = br#"{"Item":{"PK":{"S":"a"}}}"#;
        let head = format!(
            "POST / HTTP/1.1\r\nx-amz-target: DynamoDB_20120810.PutItem\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).await.expect("head");
        c.write_all(body).await.expect("body");
        read_message(c).await.expect("answer")
    }

    #[tokio::test]
    async fn the_proxy_keeps_a_connection_for_call_after_call_and_counts_each() {
        let (addr, tally) = start(closing_upstream().await, Connections::KeepAlive)
            .await
            .expect("proxy");
        let mut c = TcpStream::connect(addr).await.expect("connect");
        for _ in 0..2 {
            let answer = put_item(&mut c).await;
            assert_eq!(answer.body(), b"{}");
            assert_eq!(
                answer.headers.get("connection").map(String::as_str),
                Some("keep-alive")
            );
        }
        let counts = tally.snapshot();
        assert_eq!(counts.calls.get("dynamodb:PutItem"), Some(&2));
        assert_eq!(counts.write_units, 2.0);
    }

    #[tokio::test]
    async fn the_proxy_closes_after_each_call_when_told_to() {
        let (addr, tally) = start(closing_upstream().await, Connections::Close)
            .await
            .expect("proxy");
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let answer = put_item(&mut c).await;
        assert_eq!(
            answer.headers.get("connection").map(String::as_str),
            Some("close")
        );
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.expect("read to the close");
        assert!(rest.is_empty());
        assert_eq!(tally.snapshot().calls.get("dynamodb:PutItem"), Some(&1));
    }
}
