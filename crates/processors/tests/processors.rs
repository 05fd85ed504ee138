//! Behaviour of the shipped processors, driven directly (no store, no queue, no HTTP).
//!
//! The order processor runs against `MemoryBook`, an in-process fake of the `OrderBook` port
//! that follows its contract (all-or-nothing reservations, idempotent per order id); the real
//! adapters pass the shared contract suite elsewhere.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "harness code outside #[test] functions: a failure here is a failed test"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackflow_core::{
    async_trait, FieldError, JobContext, JobId, ManualClock, Owner, PortError, ProcessError,
    Processor, Progress, ProgressSink, Timestamp,
};
use ackflow_processors::demo::{Demo, DemoInput};
use ackflow_processors::order::{
    ConfirmedOrder, OrderBook, OrderInput, OrderLine, OrderProcessor, ReserveError, CATALOG,
};
use ackflow_processors::registry_with;
use serde_json::{json, Value};

// ---- Harness ---------------------------------------------------------------------------------

/// Records progress; reports the attempt abandoned once `abandon_after` reports were made.
#[derive(Debug, Default)]
struct Recorder {
    reports: Mutex<Vec<Progress>>,
    abandon_after: Option<usize>,
}

impl Recorder {
    fn abandoning_after(reports: usize) -> Self {
        Self {
            abandon_after: Some(reports),
            ..Self::default()
        }
    }

    fn reports(&self) -> Vec<(u8, String)> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .map(|p| (p.percent, p.message.clone()))
            .collect()
    }
}

#[async_trait]
impl ProgressSink for Recorder {
    async fn report(&self, progress: Progress) {
        self.reports.lock().unwrap().push(progress);
    }

    fn abandoned(&self) -> bool {
        self.abandon_after
            .is_some_and(|n| self.reports.lock().unwrap().len() >= n)
    }
}

fn context(id: JobId, attempt: u32, sink: Arc<Recorder>) -> JobContext {
    JobContext::new(
        id,
        Owner::anonymous(),
        attempt,
        5,
        Timestamp::from_millis(i64::MAX),
        sink,
    )
}

#[derive(Debug, Default)]
struct BookState {
    stock: HashMap<String, u32>,
    reservations: HashMap<JobId, Vec<OrderLine>>,
    orders: HashMap<JobId, ConfirmedOrder>,
    reserve_calls: Vec<Vec<OrderLine>>,
    /// Calls (`"order"`, `"reserve"`, `"confirm"`) whose next use fails as unavailable.
    fail_next: Vec<&'static str>,
}

/// An in-memory order book that keeps the port's contract.
#[derive(Debug, Default)]
struct MemoryBook(Mutex<BookState>);

#[derive(Debug, thiserror::Error)]
#[error("simulated outage")]
struct Outage;

impl MemoryBook {
    /// Stocked as the catalog says.
    fn seeded() -> Arc<Self> {
        let book = Self::default();
        book.0.lock().unwrap().stock = CATALOG
            .iter()
            .map(|i| (i.sku.to_owned(), i.initial_stock))
            .collect();
        Arc::new(book)
    }

    fn stock(&self, sku: &str) -> Option<u32> {
        self.0.lock().unwrap().stock.get(sku).copied()
    }

    fn reserve_calls(&self) -> Vec<Vec<OrderLine>> {
        self.0.lock().unwrap().reserve_calls.clone()
    }

    fn fail_next(&self, call: &'static str) {
        self.0.lock().unwrap().fail_next.push(call);
    }

    fn unstock(&self, sku: &str) {
        self.0.lock().unwrap().stock.remove(sku);
    }

    fn check(&self, call: &'static str) -> Result<(), PortError> {
        let mut state = self.0.lock().unwrap();
        match state.fail_next.iter().position(|c| *c == call) {
            Some(i) => {
                state.fail_next.remove(i);
                Err(PortError::unavailable(call, Outage))
            }
            None => Ok(()),
        }
    }
}

#[async_trait]
impl OrderBook for MemoryBook {
    async fn reserve(&self, order_id: JobId, lines: &[OrderLine]) -> Result<(), ReserveError> {
        self.check("reserve")?;
        let mut state = self.0.lock().unwrap();
        state.reserve_calls.push(lines.to_vec());
        if state.reservations.contains_key(&order_id) {
            return Ok(());
        }
        for line in lines {
            let available = *state
                .stock
                .get(&line.sku)
                .ok_or_else(|| ReserveError::UnknownSku(line.sku.clone()))?;
            if available < line.quantity {
                return Err(ReserveError::OutOfStock {
                    sku: line.sku.clone(),
                    requested: line.quantity,
                    available,
                });
            }
        }
        for line in lines {
            *state.stock.get_mut(&line.sku).unwrap() -= line.quantity;
        }
        state.reservations.insert(order_id, lines.to_vec());
        Ok(())
    }

    async fn confirm(&self, order: &ConfirmedOrder) -> Result<(), PortError> {
        self.check("confirm")?;
        let mut state = self.0.lock().unwrap();
        state
            .orders
            .entry(order.order_id)
            .or_insert_with(|| order.clone());
        Ok(())
    }

    async fn available(&self, sku: &str) -> Result<Option<u32>, PortError> {
        self.check("available")?;
        Ok(self.stock(sku))
    }

    async fn order(&self, order_id: JobId) -> Result<Option<ConfirmedOrder>, PortError> {
        self.check("order")?;
        Ok(self.0.lock().unwrap().orders.get(&order_id).cloned())
    }
}

const START: Timestamp = Timestamp::from_millis(1_795_000_000_000);

fn order_processor(book: &Arc<MemoryBook>) -> (OrderProcessor, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    (OrderProcessor::new(book.clone(), clock.clone()), clock)
}

fn pointers(errors: &[FieldError]) -> Vec<&str> {
    let mut p: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
    p.sort_unstable();
    p
}

fn detail_at<'a>(errors: &'a [FieldError], pointer: &str) -> &'a str {
    errors
        .iter()
        .find(|e| e.pointer == pointer)
        .map(|e| e.detail.as_str())
        .unwrap_or_else(|| panic!("no error at {pointer}: {errors:?}"))
}

fn rejection(outcome: Result<Value, ProcessError>) -> ackflow_core::Rejection {
    match outcome {
        Err(ProcessError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn transient(outcome: Result<Value, ProcessError>) -> String {
    match outcome {
        Err(ProcessError::Transient(e)) => ackflow_core::error_chain(e.as_ref()),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

// ---- demo: validation ------------------------------------------------------------------------

#[test]
fn an_empty_demo_input_is_valid_and_means_an_instant_success() {
    assert_eq!(Demo::new().validate(&json!({})), Ok(()));
    assert_eq!(DemoInput::parse(&json!({})), Ok(DemoInput::default()));
    assert_eq!(
        DemoInput::parse(&json!({"reject": null})),
        Ok(DemoInput::default())
    );
}

#[test]
fn every_invalid_demo_field_is_reported_at_its_pointer_at_once() {
    let errors = Demo::new()
        .validate(&json!({
            "steps": -1,
            "step_ms": "fast",
            "fail_attempts": 101,
            "panic": "yes",
            "reject": "   ",
            "stpes": 5,
        }))
        .unwrap_err();
    assert_eq!(
        pointers(&errors),
        [
            "/fail_attempts",
            "/panic",
            "/reject",
            "/step_ms",
            "/steps",
            "/stpes"
        ]
    );
    assert_eq!(
        detail_at(&errors, "/steps"),
        "must be from 0 to 1000, not -1"
    );
    assert_eq!(
        detail_at(&errors, "/step_ms"),
        "must be a whole number from 0 to 60000, not a string"
    );
    assert_eq!(
        detail_at(&errors, "/fail_attempts"),
        "must be from 0 to 100, not 101"
    );
    assert_eq!(
        detail_at(&errors, "/panic"),
        "must be true or false, not a string"
    );
    assert_eq!(detail_at(&errors, "/reject"), "must not be empty or blank");
    assert!(
        detail_at(&errors, "/stpes").starts_with("unknown field 'stpes'; the fields are: steps,"),
        "{errors:?}"
    );
}

#[test]
fn demo_bounds_accept_their_edges_and_refuse_one_beyond() {
    let demo = Demo::new();
    for ok in [
        json!({"steps": 1000, "step_ms": 0, "fail_attempts": 100}),
        json!({"steps": 10, "step_ms": 60000, "panic": true}),
        json!({"reject": "r".repeat(500)}),
    ] {
        assert_eq!(demo.validate(&ok), Ok(()), "{ok}");
    }
    for (bad, pointer) in [
        (json!({"steps": 1001}), "/steps"),
        (json!({"step_ms": 60001}), "/step_ms"),
        (json!({"steps": 2.5}), "/steps"),
        (json!({"reject": "r".repeat(501)}), "/reject"),
        (json!({"reject": 42}), "/reject"),
        (json!({"panic": null}), "/panic"),
    ] {
        let errors = demo.validate(&bad).unwrap_err();
        assert_eq!(pointers(&errors), [pointer], "{bad}");
    }
}

#[test]
fn a_demo_run_longer_than_ten_minutes_is_refused() {
    let demo = Demo::new();
    assert_eq!(
        demo.validate(&json!({"steps": 1000, "step_ms": 600})),
        Ok(())
    );
    let errors = demo
        .validate(&json!({"steps": 1000, "step_ms": 601}))
        .unwrap_err();
    assert_eq!(pointers(&errors), ["/step_ms"]);
    assert!(
        errors[0].detail.contains("601000 ms") && errors[0].detail.contains("10 minutes"),
        "{errors:?}"
    );
}

#[test]
fn a_demo_input_must_be_an_object() {
    for bad in [json!([]), json!("steps"), json!(null), json!(3)] {
        let errors = Demo::new().validate(&bad).unwrap_err();
        assert_eq!(pointers(&errors), [""], "{bad}");
        assert!(errors[0].detail.starts_with("must be a JSON object"));
    }
}

#[test]
fn thousands_of_unknown_fields_give_a_bounded_error_list() {
    let input: serde_json::Map<String, Value> =
        (0..5000).map(|i| (format!("f{i}"), json!(1))).collect();
    let errors = Demo::new().validate(&Value::Object(input)).unwrap_err();
    assert_eq!(errors.len(), 51);
    assert!(errors[50]
        .detail
        .starts_with("4950 more errors were left out"));
}

/// A 100 KB field name, in the input or in an order's item, is quoted cut short, with `…`,
/// in the pointer and the detail alike: an answer never echoes a huge input at any depth.
#[test]
fn an_unknown_field_with_a_huge_name_is_quoted_cut_short_at_any_depth() {
    let huge = "f".repeat(100 * 1024);
    let (order, _) = order_processor(&MemoryBook::seeded());
    let demo_errors = Demo::new().validate(&json!({ &huge: 1 })).unwrap_err();
    let order_errors = order
        .validate(&json!({
            "customer": "Ada",
            "items": [{"sku": "mug-red", "quantity": 1, &huge: 1}],
        }))
        .unwrap_err();
    for (errors, at) in [(demo_errors, ""), (order_errors, "/items/0")] {
        assert_eq!(errors.len(), 1, "{errors:?}");
        let cut = format!("{}…", "f".repeat(64));
        assert_eq!(errors[0].pointer, format!("{at}/{cut}"));
        assert!(
            errors[0].detail.contains(&format!("'{cut}'"))
                && errors[0].detail.contains("102400 characters long"),
            "{}",
            errors[0].detail
        );
        assert!(errors[0].detail.len() < 200, "{}", errors[0].detail);
    }
}

#[test]
fn unknown_field_names_are_escaped_in_pointers() {
    let errors = Demo::new().validate(&json!({"a/b~c": 1})).unwrap_err();
    assert_eq!(pointers(&errors), ["/a~1b~0c"]);
}

// ---- demo: processing ------------------------------------------------------------------------

#[tokio::test]
async fn a_demo_job_fails_its_first_attempts_then_succeeds() {
    let demo = Demo::new();
    let input = json!({"fail_attempts": 2});
    for attempt in 1..=2 {
        let why = transient(
            demo.process(input.clone(), &JobContext::detached(attempt))
                .await,
        );
        assert_eq!(
            why,
            format!("simulated temporary failure on attempt {attempt}")
        );
    }
    let result = demo.process(input, &JobContext::detached(3)).await.unwrap();
    assert_eq!(result, json!({"steps": 0, "attempt": 3}));
}

#[tokio::test]
async fn a_demo_job_with_a_reason_is_rejected_in_those_words() {
    let reason = "Your account is on hold; call us to lift it.";
    // The rejection comes first, before any simulated failure.
    let input = json!({"reject": reason, "fail_attempts": 3, "panic": true});
    let r = rejection(Demo::new().process(input, &JobContext::detached(1)).await);
    assert_eq!(r.slug, "rejected");
    assert_eq!(r.detail, reason);
    assert!(r.errors.is_empty());
}

#[tokio::test]
async fn a_demo_job_asked_to_panic_panics_on_every_attempt() {
    let demo = Arc::new(Demo::new());
    for attempt in [1, 5] {
        let demo = demo.clone();
        let joined = tokio::spawn(async move {
            demo.process(json!({"panic": true}), &JobContext::detached(attempt))
                .await
        })
        .await;
        let panic = joined.expect_err("the task panicked").into_panic();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(
            message,
            format!("demo job panicked on purpose (attempt {attempt})")
        );
    }
}

#[tokio::test]
async fn a_demo_job_that_fails_first_panics_only_after_its_failing_attempts() {
    let why = transient(
        Demo::new()
            .process(
                json!({"fail_attempts": 1, "panic": true}),
                &JobContext::detached(1),
            )
            .await,
    );
    assert_eq!(why, "simulated temporary failure on attempt 1");
}

#[tokio::test(start_paused = true)]
async fn demo_progress_ticks_every_step_and_reaches_100() {
    let sink = Arc::new(Recorder::default());
    let ctx = context(JobId::random(), 1, sink.clone());
    let started = tokio::time::Instant::now();
    let result = Demo::new()
        .process(json!({"steps": 4, "step_ms": 1500}), &ctx)
        .await
        .unwrap();
    assert_eq!(result, json!({"steps": 4, "attempt": 1}));
    assert_eq!(
        sink.reports(),
        [
            (25, "Step 1 of 4".to_owned()),
            (50, "Step 2 of 4".to_owned()),
            (75, "Step 3 of 4".to_owned()),
            (100, "Step 4 of 4".to_owned()),
        ]
    );
    // Each tick slept its step_ms (in paused, virtual time).
    assert_eq!(started.elapsed(), Duration::from_millis(6000));
}

#[tokio::test(start_paused = true)]
async fn demo_percentages_round_down_and_never_pass_100() {
    let sink = Arc::new(Recorder::default());
    let ctx = context(JobId::random(), 1, sink.clone());
    Demo::new()
        .process(json!({"steps": 3, "step_ms": 1}), &ctx)
        .await
        .unwrap();
    let percents: Vec<u8> = sink.reports().into_iter().map(|(p, _)| p).collect();
    assert_eq!(percents, [33, 66, 100]);
}

#[tokio::test(start_paused = true)]
async fn a_demo_job_stops_early_when_its_attempt_is_abandoned() {
    let sink = Arc::new(Recorder::abandoning_after(2));
    let ctx = context(JobId::random(), 1, sink.clone());
    let started = tokio::time::Instant::now();
    let why = transient(
        Demo::new()
            .process(json!({"steps": 10, "step_ms": 1000}), &ctx)
            .await,
    );
    assert_eq!(
        why,
        "stopped after step 2 of 10: this attempt no longer owns the job"
    );
    assert_eq!(sink.reports().len(), 2);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test]
async fn a_demo_input_that_became_invalid_is_rejected_when_it_runs() {
    let r = rejection(
        Demo::new()
            .process(json!({"steps": "many"}), &JobContext::detached(1))
            .await,
    );
    assert_eq!(r.slug, "invalid-input");
    assert_eq!(pointers(&r.errors), ["/steps"]);
}

// ---- order: validation -----------------------------------------------------------------------

fn order_input(items: Value) -> Value {
    json!({"customer": "Ada Lovelace", "items": items})
}

#[test]
fn a_valid_cart_passes_validation() {
    let (processor, _) = order_processor(&MemoryBook::seeded());
    let input = order_input(json!([
        {"sku": "mug-red", "quantity": 1},
        {"sku": "coaster-cork", "quantity": 1000},
        {"sku": "mug-red", "quantity": 2},
    ]));
    assert_eq!(processor.validate(&input), Ok(()));
    let parsed = OrderInput::parse(&input).unwrap();
    assert_eq!(parsed.items.len(), 3);
    assert_eq!(parsed.to_json(), input);
}

#[test]
fn every_invalid_order_field_is_reported_at_its_pointer_at_once() {
    let (processor, _) = order_processor(&MemoryBook::seeded());
    let errors = processor
        .validate(&json!({
            "customer": "",
            "coupon": "FREE",
            "items": [
                {"sku": "mug-green", "quantity": 0},
                {"sku": "mug-red", "quantity": 1.5, "colour": "red"},
                "tea-sencha",
                {},
                {"sku": 7, "quantity": 1001},
            ],
        }))
        .unwrap_err();
    assert_eq!(
        pointers(&errors),
        [
            "/coupon",
            "/customer",
            "/items/0/quantity",
            "/items/0/sku",
            "/items/1/colour",
            "/items/1/quantity",
            "/items/2",
            "/items/3/quantity",
            "/items/3/sku",
            "/items/4/quantity",
            "/items/4/sku",
        ]
    );
    assert!(detail_at(&errors, "/coupon")
        .starts_with("unknown field 'coupon'; the fields are: customer, items"));
    assert_eq!(
        detail_at(&errors, "/customer"),
        "must not be empty or blank"
    );
    assert_eq!(
        detail_at(&errors, "/items/0/quantity"),
        "must be from 1 to 1000, not 0"
    );
    assert!(detail_at(&errors, "/items/1/colour").contains("the fields are: sku, quantity"));
    assert_eq!(
        detail_at(&errors, "/items/2"),
        "must be a JSON object, not a string"
    );
    assert!(detail_at(&errors, "/items/3/sku").starts_with("is required"));
    assert!(detail_at(&errors, "/items/3/quantity").starts_with("is required"));
    assert_eq!(
        detail_at(&errors, "/items/4/quantity"),
        "must be from 1 to 1000, not 1001"
    );
}

#[test]
fn an_unknown_sku_is_named_with_the_skus_that_exist() {
    let (processor, _) = order_processor(&MemoryBook::seeded());
    let errors = processor
        .validate(&order_input(json!([
            {"sku": "mug-red", "quantity": 1},
            {"sku": "mug-green", "quantity": 1},
        ])))
        .unwrap_err();
    assert_eq!(pointers(&errors), ["/items/1/sku"]);
    let detail = &errors[0].detail;
    assert!(
        detail.starts_with("'mug-green' is not in the catalog"),
        "{detail}"
    );
    for item in CATALOG {
        assert!(detail.contains(item.sku), "{detail} misses {}", item.sku);
    }
}

#[test]
fn customer_and_items_are_required_and_bounded() {
    let (processor, _) = order_processor(&MemoryBook::seeded());
    let line = json!({"sku": "mug-red", "quantity": 1});
    let cases = [
        (json!({}), vec!["/customer", "/items"]),
        (json!({"customer": "A", "items": []}), vec!["/items"]),
        (
            json!({"customer": "A", "items": {"sku": "mug-red"}}),
            vec!["/items"],
        ),
        (
            json!({"customer": "A", "items": vec![line.clone(); 51]}),
            vec!["/items"],
        ),
        (
            json!({"customer": "c".repeat(201), "items": [line.clone()]}),
            vec!["/customer"],
        ),
        (
            json!({"customer": 42, "items": [line.clone()]}),
            vec!["/customer"],
        ),
    ];
    for (input, expected) in cases {
        let errors = processor.validate(&input).unwrap_err();
        assert_eq!(pointers(&errors), expected, "{input}");
    }
    let edges = json!({"customer": "é".repeat(200), "items": vec![line; 50]});
    assert_eq!(processor.validate(&edges), Ok(()));
}

#[test]
fn an_order_input_must_be_an_object() {
    let (processor, _) = order_processor(&MemoryBook::seeded());
    let errors = processor.validate(&json!(["mug-red"])).unwrap_err();
    assert_eq!(pointers(&errors), [""]);
}

// ---- order: processing -----------------------------------------------------------------------

#[tokio::test]
async fn an_order_is_reserved_priced_and_confirmed_step_by_step() {
    let book = MemoryBook::seeded();
    let (processor, _) = order_processor(&book);
    let sink = Arc::new(Recorder::default());
    let id = JobId::random();
    let result = processor
        .process(
            order_input(json!([
                {"sku": "mug-red", "quantity": 2},
                {"sku": "tea-earl-grey", "quantity": 3},
            ])),
            &context(id, 1, sink.clone()),
        )
        .await
        .unwrap();

    assert_eq!(result["order_id"], json!(id.to_string()));
    assert_eq!(result["customer"], "Ada Lovelace");
    assert_eq!(result["total_cents"], 2 * 1250 + 3 * 690);
    assert_eq!(result["summary"], "Order confirmed: 5 items, 45.70");
    assert_eq!(result["confirmed_at"], START.to_rfc3339());
    assert_eq!(
        result["lines"],
        json!([
            {"sku": "mug-red", "name": "Red Mug", "quantity": 2, "unit_price_cents": 1250, "line_total_cents": 2500},
            {"sku": "tea-earl-grey", "name": "Earl Grey Tea, 100 g", "quantity": 3, "unit_price_cents": 690, "line_total_cents": 2070},
        ])
    );
    assert_eq!(book.stock("mug-red"), Some(48));
    assert_eq!(book.stock("tea-earl-grey"), Some(197));
    let stored = book.order(id).await.unwrap().expect("the order was stored");
    let mut shown = serde_json::to_value(&stored).unwrap();
    shown["summary"] = result["summary"].clone();
    assert_eq!(
        shown, result,
        "the result is the stored order plus a summary"
    );
    assert_eq!(
        sink.reports(),
        [
            (10, "Checking the cart".to_owned()),
            (40, "Reserving stock".to_owned()),
            (70, "Pricing the order".to_owned()),
            (90, "Confirming the order".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_single_item_is_summarised_in_the_singular() {
    let book = MemoryBook::seeded();
    let (processor, _) = order_processor(&book);
    let result = processor
        .process(
            order_input(json!([{"sku": "coaster-cork", "quantity": 1}])),
            &JobContext::detached(1),
        )
        .await
        .unwrap();
    assert_eq!(result["summary"], "Order confirmed: 1 item, 3.00");
}

#[tokio::test]
async fn out_of_stock_names_the_item_and_what_is_left_and_reserves_nothing() {
    let book = MemoryBook::seeded();
    let (processor, _) = order_processor(&book);
    let id = JobId::random();
    let r = rejection(
        processor
            .process(
                order_input(json!([
                    {"sku": "mug-red", "quantity": 1},
                    {"sku": "mug-blue", "quantity": 3},
                ])),
                &context(id, 1, Arc::new(Recorder::default())),
            )
            .await,
    );
    assert_eq!(r.slug, "out-of-stock");
    assert_eq!(r.title, "Out of stock");
    assert!(
        r.detail.starts_with(
            "Blue Mug has 2 left and your order asked for 3; lower the quantity or remove it, then order again."
        ),
        "{}",
        r.detail
    );
    assert_eq!(pointers(&r.errors), ["/items/1/quantity"]);
    assert_eq!(r.errors[0].detail, "only 2 left; the order asks for 3");
    assert_eq!(book.stock("mug-red"), Some(50), "nothing was reserved");
    assert_eq!(book.stock("mug-blue"), Some(2));
    assert_eq!(book.order(id).await.unwrap(), None);
}

#[tokio::test]
async fn a_sold_out_item_is_named_as_sold_out() {
    let book = MemoryBook::seeded();
    let (processor, _) = order_processor(&book);
    let r = rejection(
        processor
            .process(
                order_input(json!([{"sku": "poster-limited", "quantity": 1}])),
                &JobContext::detached(1),
            )
            .await,
    );
    assert_eq!(r.slug, "out-of-stock");
    assert!(
        r.detail
            .starts_with("Limited Edition Poster is sold out; remove it from your order"),
        "{}",
        r.detail
    );
    assert_eq!(pointers(&r.errors), ["/items/0/quantity"]);
    assert_eq!(r.errors[0].detail, "sold out");
}

#[tokio::test]
async fn duplicate_skus_are_merged_before_reserving() {
    let book = MemoryBook::seeded();
    let (processor, _) = order_processor(&book);
    let result = processor
        .process(
            order_input(json!([
                {"sku": "mug-blue", "quantity": 1},
                {"sku": "mug-red", "quantity": 4},
                {"sku": "mug-blue", "quantity": 1},
            ])),
            &JobContext::detached(1),
        )
        .await
        .unwrap();
    let reserved: Vec<(String, u32)> = book
        .reserve_calls()
        .concat()
        .into_iter()
        .map(|l| (l.sku, l.quantity))
        .collect();
    assert_eq!(
        reserved,
        [("mug-blue".to_owned(), 2), ("mug-red".to_owned(), 4)]
    );
    assert_eq!(result["lines"].as_array().map(Vec::len), Some(2));
    assert_eq!(result["lines"][0]["quantity"], 2);
    assert_eq!(result["total_cents"], 6 * 1250);
    assert_eq!(book.stock("mug-blue"), Some(0));
}

#[tokio::test]
async fn merged_lines_are_checked_together_and_the_first_line_is_pointed_at() {
    let book = MemoryBook::seeded();
    let (processor, _) = order_processor(&book);
    let r = rejection(
        processor
            .process(
                order_input(json!([
                    {"sku": "mug-blue", "quantity": 2},
                    {"sku": "mug-blue", "quantity": 1},
                ])),
                &JobContext::detached(1),
            )
            .await,
    );
    assert!(r
        .detail
        .contains("Blue Mug has 2 left and your order asked for 3"));
    assert_eq!(pointers(&r.errors), ["/items/0/quantity"]);
}

#[tokio::test]
async fn a_retried_order_does_not_reserve_twice_and_returns_the_same_order() {
    let book = MemoryBook::seeded();
    let (processor, clock) = order_processor(&book);
    let id = JobId::random();
    let input = order_input(json!([{"sku": "teapot-cast-iron", "quantity": 3}]));
    let first = processor
        .process(
            input.clone(),
            &context(id, 1, Arc::new(Recorder::default())),
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(90));
    let second = processor
        .process(input, &context(id, 2, Arc::new(Recorder::default())))
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(book.stock("teapot-cast-iron"), Some(7));
}

#[tokio::test]
async fn an_order_whose_confirmation_failed_is_confirmed_on_retry_with_one_reservation() {
    let book = MemoryBook::seeded();
    let (processor, _) = order_processor(&book);
    let id = JobId::random();
    let input = order_input(json!([{"sku": "kettle-gooseneck", "quantity": 2}]));
    book.fail_next("confirm");
    let why = transient(
        processor
            .process(
                input.clone(),
                &context(id, 1, Arc::new(Recorder::default())),
            )
            .await,
    );
    assert!(why.starts_with(&format!("confirming order {id}")), "{why}");
    assert_eq!(book.stock("kettle-gooseneck"), Some(3));

    let result = processor
        .process(input, &context(id, 2, Arc::new(Recorder::default())))
        .await
        .unwrap();
    assert_eq!(result["total_cents"], 2 * 7900);
    assert_eq!(book.stock("kettle-gooseneck"), Some(3), "reserved once");
    assert!(book.order(id).await.unwrap().is_some());
}

#[tokio::test]
async fn order_book_outages_are_transient_and_keep_their_cause() {
    let input = order_input(json!([{"sku": "mug-red", "quantity": 1}]));
    for (call, context_line) in [
        ("order", "looking up order"),
        ("reserve", "reserving stock for order"),
    ] {
        let book = MemoryBook::seeded();
        let (processor, _) = order_processor(&book);
        book.fail_next(call);
        let why = transient(
            processor
                .process(input.clone(), &JobContext::detached(1))
                .await,
        );
        assert!(why.starts_with(context_line), "{why}");
        assert!(why.ends_with("simulated outage"), "{why}");
        assert_eq!(book.stock("mug-red"), Some(50));
    }
}

#[tokio::test]
async fn an_item_the_book_does_not_stock_is_rejected_as_unknown() {
    let book = MemoryBook::seeded();
    book.unstock("tea-sencha");
    let (processor, _) = order_processor(&book);
    let r = rejection(
        processor
            .process(
                order_input(json!([
                    {"sku": "mug-red", "quantity": 1},
                    {"sku": "tea-sencha", "quantity": 1},
                ])),
                &JobContext::detached(1),
            )
            .await,
    );
    assert_eq!(r.slug, "unknown-item");
    assert!(
        r.detail.contains("'tea-sencha' is not sold any more"),
        "{}",
        r.detail
    );
    assert_eq!(pointers(&r.errors), ["/items/1/sku"]);
    assert_eq!(book.stock("mug-red"), Some(50));
}

#[tokio::test]
async fn an_order_input_that_became_invalid_is_rejected_before_touching_stock() {
    let book = MemoryBook::seeded();
    let (processor, _) = order_processor(&book);
    let r = rejection(
        processor
            .process(
                order_input(json!([{"sku": "mug-red", "quantity": 0}])),
                &JobContext::detached(1),
            )
            .await,
    );
    assert_eq!(r.slug, "invalid-input");
    assert_eq!(pointers(&r.errors), ["/items/0/quantity"]);
    assert!(book.reserve_calls().is_empty());
}

// ---- registry --------------------------------------------------------------------------------

#[test]
fn the_registry_serves_order_and_demo_only_when_asked() {
    let book: Arc<dyn OrderBook> = MemoryBook::seeded();
    let clock = Arc::new(ManualClock::new(START));
    let with_demo = registry_with(book.clone(), clock.clone(), true);
    assert_eq!(with_demo.kinds(), ["demo", "order"]);
    let without = registry_with(book, clock, false);
    assert_eq!(without.kinds(), ["order"]);
}
