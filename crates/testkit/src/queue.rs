//! The [`Queue`] contract: SQS semantics as ackflow relies on them.
//!
//! Each function checks one behaviour on a fresh, empty queue whose max receive count is
//! `max_receive_count`. Messages are told apart by body, never by arrival order (SQS promises
//! none). Stale receipts are no-ops, without an error, for `delete`, `change_visibility` and
//! `dead_letter`: the newer delivery owns the message. (On SQS a stale `ChangeMessageVisibility`
//! answers `ReceiptHandleIsInvalid`; the adapter treats that as this no-op.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ackflow_core::{Delivery, OutgoingMessage, Queue, QueueDepth};

use crate::Harness;

/// The visibility timeout the suite uses: whole seconds, because SQS counts in seconds.
pub const VISIBILITY: Duration = Duration::from_secs(2);
/// Added to every wait for a deadline, for backends whose clock is not ours.
pub const MARGIN: Duration = Duration::from_secs(1);
/// A visibility that outlasts any behaviour: the message stays in flight.
pub const LONG: Duration = Duration::from_secs(120);
/// How often the suite receives again when a backend returns fewer messages than are visible
/// (SQS short polling samples a subset of its servers).
const TRIES: usize = 5;

fn message(body: &str, attributes: &[(&str, &str)]) -> OutgoingMessage {
    OutgoingMessage {
        body: body.to_owned(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        delay: Duration::ZERO,
    }
}

fn plain(body: &str) -> OutgoingMessage {
    message(body, &[("ackflow-job-id", body)])
}

async fn send(queue: &dyn Queue, m: OutgoingMessage) {
    let body = m.body.clone();
    queue
        .send(m)
        .await
        .unwrap_or_else(|e| panic!("sending {body:?} failed: {e:?}"));
}

/// Receives until `want` messages arrived (or the tries ran out), at most 10 per call.
async fn receive_up_to(queue: &dyn Queue, want: usize, visibility: Duration) -> Vec<Delivery> {
    let mut got: Vec<Delivery> = Vec::new();
    for _ in 0..TRIES {
        if got.len() >= want {
            break;
        }
        let max = (want - got.len()).min(10);
        let batch = queue.receive(max, visibility).await.expect("receive");
        assert!(
            batch.len() <= max,
            "asked for at most {max} messages, got {}",
            batch.len()
        );
        got.extend(batch);
    }
    got
}

/// Receives exactly one message.
#[track_caller]
fn only(mut got: Vec<Delivery>, what: &str) -> Delivery {
    assert_eq!(got.len(), 1, "{what}: expected one message, got {got:#?}");
    got.remove(0)
}

async fn receive_one(queue: &dyn Queue, visibility: Duration, what: &str) -> Delivery {
    only(receive_up_to(queue, 1, visibility).await, what)
}

async fn assert_nothing_visible(queue: &dyn Queue, what: &str) {
    let got = queue.receive(10, LONG).await.expect("receive");
    assert!(got.is_empty(), "{what}: expected no message, got {got:#?}");
}

async fn depth(queue: &dyn Queue) -> QueueDepth {
    queue.depth().await.expect("depth")
}

/// Every attribute the message was sent with is on the dead letter, unchanged. (A backend may
/// add its own, such as why or when it was dead-lettered.)
#[track_caller]
fn assert_attributes_intact(dead: &BTreeMap<String, String>, sent: &BTreeMap<String, String>) {
    for (name, value) in sent {
        assert_eq!(
            dead.get(name),
            Some(value),
            "attribute {name} of a dead letter: {dead:?}"
        );
    }
}

fn bodies(deliveries: &[Delivery]) -> BTreeSet<String> {
    deliveries.iter().map(|d| d.body.clone()).collect()
}

/// Send, receive (body, attributes, a receive count of 1, an id and a receipt), delete: the
/// message never comes back.
pub async fn a_sent_message_is_received_with_its_body_and_attributes_then_deleted(
    queue: &dyn Queue,
    _max_receive_count: u32,
    h: &dyn Harness,
) {
    send(
        queue,
        message("hello", &[("ackflow-job-id", "j-1"), ("k", "v")]),
    )
    .await;
    let d = receive_one(queue, VISIBILITY, "after one send").await;
    assert_eq!(d.body, "hello");
    assert_eq!(
        d.attributes,
        BTreeMap::from([
            ("ackflow-job-id".to_owned(), "j-1".to_owned()),
            ("k".to_owned(), "v".to_owned()),
        ])
    );
    assert_eq!(d.receive_count, 1);
    assert!(!d.message_id.is_empty(), "a message has an id");
    assert!(!d.receipt.0.is_empty(), "a delivery has a receipt");

    queue.delete(&d.receipt).await.expect("delete");
    h.pass(VISIBILITY + MARGIN).await;
    assert_nothing_visible(queue, "a deleted message came back").await;
    assert_eq!(depth(queue).await, QueueDepth::default());
}

/// While its visibility timeout runs a received message cannot be received; afterwards it
/// comes back with the same id, a receive count one higher and a new receipt.
pub async fn a_received_message_is_invisible_until_its_visibility_timeout_then_returns_counted(
    queue: &dyn Queue,
    _max_receive_count: u32,
    h: &dyn Harness,
) {
    send(queue, plain("m")).await;
    let first = receive_one(queue, VISIBILITY, "first receive").await;
    assert_nothing_visible(queue, "during the visibility timeout").await;

    h.pass(VISIBILITY + MARGIN).await;
    let second = receive_one(queue, VISIBILITY, "after the visibility timeout").await;
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.body, "m");
    assert_eq!(second.receive_count, 2);
    assert_ne!(
        second.receipt, first.receipt,
        "every receive has its own receipt"
    );
}

/// `change_visibility` hides a received message for the new timeout, counted from the change.
pub async fn change_visibility_postpones_a_message(
    queue: &dyn Queue,
    _max_receive_count: u32,
    h: &dyn Harness,
) {
    send(queue, plain("m")).await;
    let d = receive_one(queue, VISIBILITY, "first receive").await;
    queue
        .change_visibility(&d.receipt, VISIBILITY * 3)
        .await
        .expect("change visibility");

    h.pass(VISIBILITY + MARGIN).await;
    assert_nothing_visible(queue, "after the first timeout but before the new one").await;

    h.pass(VISIBILITY * 2).await;
    let again = receive_one(queue, VISIBILITY, "after the new timeout").await;
    assert_eq!(again.message_id, d.message_id);
    assert_eq!(again.receive_count, 2);
}

/// A zero timeout returns a received message to the queue at once (a worker giving it back).
pub async fn change_visibility_to_zero_makes_a_message_visible_at_once(
    queue: &dyn Queue,
    _max_receive_count: u32,
    _h: &dyn Harness,
) {
    send(queue, plain("m")).await;
    let d = receive_one(queue, LONG, "first receive").await;
    queue
        .change_visibility(&d.receipt, Duration::ZERO)
        .await
        .expect("change visibility");
    let again = receive_one(queue, LONG, "after a zero visibility").await;
    assert_eq!(again.message_id, d.message_id);
    assert_eq!(again.receive_count, 2);
}

/// A visibility change keeps the receipt: it still deletes the message.
pub async fn a_receipt_still_deletes_its_message_after_a_visibility_change(
    queue: &dyn Queue,
    _max_receive_count: u32,
    _h: &dyn Harness,
) {
    send(queue, plain("m")).await;
    let d = receive_one(queue, VISIBILITY, "first receive").await;
    queue
        .change_visibility(&d.receipt, LONG)
        .await
        .expect("change visibility");
    queue.delete(&d.receipt).await.expect("delete");
    // Were it still there, this would make it visible; it is gone, so this changes nothing.
    queue
        .change_visibility(&d.receipt, Duration::ZERO)
        .await
        .expect("changing the visibility of a deleted message is a no-op");
    assert_nothing_visible(queue, "a deleted message came back").await;
}

/// A message sent with a delay cannot be received before the delay passes.
pub async fn a_delayed_message_is_invisible_until_its_delay_passes(
    queue: &dyn Queue,
    _max_receive_count: u32,
    h: &dyn Harness,
) {
    let mut m = plain("later");
    m.delay = VISIBILITY;
    send(queue, m).await;
    assert_nothing_visible(queue, "during the delay").await;
    assert_eq!(
        depth(queue).await.waiting,
        1,
        "a delayed message is waiting"
    );

    h.pass(VISIBILITY + MARGIN).await;
    let d = receive_one(queue, VISIBILITY, "after the delay").await;
    assert_eq!(d.body, "later");
    assert_eq!(d.receive_count, 1);
}

/// A worker whose visibility timeout ran out cannot delete the message from under the worker
/// that received it next.
pub async fn a_stale_receipt_cannot_delete_the_newer_delivery(
    queue: &dyn Queue,
    _max_receive_count: u32,
    h: &dyn Harness,
) {
    send(queue, plain("m")).await;
    let stale = receive_one(queue, VISIBILITY, "first receive").await;
    h.pass(VISIBILITY + MARGIN).await;
    let current = receive_one(queue, LONG, "second receive").await;

    queue
        .delete(&stale.receipt)
        .await
        .expect("a stale delete is not an error");

    // The message is still there, held by the current receipt: give it back and see it again.
    queue
        .change_visibility(&current.receipt, Duration::ZERO)
        .await
        .expect("change visibility");
    let third = receive_one(queue, LONG, "the stale delete removed the message").await;
    assert_eq!(third.message_id, stale.message_id);
    assert_eq!(third.receive_count, 3);
    queue.delete(&third.receipt).await.expect("delete");
    assert_eq!(depth(queue).await, QueueDepth::default());
}

/// A stale receipt cannot make the newer delivery's message visible (or hide it longer).
pub async fn a_stale_receipt_cannot_change_the_visibility_of_the_newer_delivery(
    queue: &dyn Queue,
    _max_receive_count: u32,
    h: &dyn Harness,
) {
    send(queue, plain("m")).await;
    let stale = receive_one(queue, VISIBILITY, "first receive").await;
    h.pass(VISIBILITY + MARGIN).await;
    let current = receive_one(queue, LONG, "second receive").await;

    queue
        .change_visibility(&stale.receipt, Duration::ZERO)
        .await
        .expect("a stale visibility change is not an error");
    assert_nothing_visible(queue, "a stale receipt released the newer delivery").await;

    queue.delete(&current.receipt).await.expect("delete");
    assert_eq!(depth(queue).await, QueueDepth::default());
}

/// A message received `max_receive_count` times is moved to the dead-letter queue by the next
/// receive instead of being delivered, with its id, body and attributes intact; listing the
/// dead letters does not remove them.
pub async fn the_receive_after_the_last_allowed_one_moves_a_message_to_the_dead_letter_queue(
    queue: &dyn Queue,
    max_receive_count: u32,
    _h: &dyn Harness,
) {
    let attributes = [("ackflow-job-id", "j-9"), ("ackflow-owner", "alice")];
    send(queue, message("poison", &attributes)).await;
    let mut id = None;
    for n in 1..=max_receive_count {
        // A zero visibility makes the message receivable again at once.
        let d = receive_one(queue, Duration::ZERO, &format!("receive {n}")).await;
        assert_eq!(d.receive_count, n);
        id.get_or_insert(d.message_id.clone());
        assert_eq!(Some(&d.message_id), id.as_ref());
    }
    assert_nothing_visible(queue, "the receive after the last allowed one delivered it").await;

    let dead = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let letter = &dead[0].delivery;
    assert_eq!(Some(&letter.message_id), id.as_ref());
    assert_eq!(letter.body, "poison");
    assert_attributes_intact(
        &letter.attributes,
        &attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let again = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(
        again
            .iter()
            .map(|d| &d.delivery.message_id)
            .collect::<Vec<_>>(),
        vec![&letter.message_id],
        "listing dead letters removed them"
    );
    assert_eq!(
        depth(queue).await,
        QueueDepth {
            waiting: 0,
            in_flight: 0,
            dead: 1
        }
    );
}

/// `dead_letter` moves a received message to the dead-letter queue now; its receipt no longer
/// reaches it, and its batch-mates are untouched.
pub async fn dead_letter_moves_a_received_message_at_once(
    queue: &dyn Queue,
    _max_receive_count: u32,
    _h: &dyn Harness,
) {
    send(queue, message("bad", &[("ackflow-job-id", "j-bad")])).await;
    send(queue, plain("good")).await;
    let got = receive_up_to(queue, 2, LONG).await;
    assert_eq!(bodies(&got), BTreeSet::from(["bad".into(), "good".into()]));
    let (bad, good): (Vec<_>, Vec<_>) = got.into_iter().partition(|d| d.body == "bad");
    let (bad, good) = (only(bad, "bad"), only(good, "good"));

    queue.dead_letter(&bad).await.expect("dead letter");
    let dead = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    // Not the message id: moving a message by hand (send to the DLQ, delete here) gives it a new
    // one on SQS. The attributes say which job it was.
    assert_eq!(dead[0].delivery.body, "bad");
    assert_attributes_intact(&dead[0].delivery.attributes, &bad.attributes);
    assert_eq!(
        depth(queue).await,
        QueueDepth {
            waiting: 0,
            in_flight: 1,
            dead: 1
        }
    );

    queue
        .change_visibility(&bad.receipt, Duration::ZERO)
        .await
        .expect("the receipt of a dead letter is stale, not an error");
    assert_nothing_visible(queue, "a dead-lettered message came back").await;
    queue.delete(&good.receipt).await.expect("delete");
    assert_eq!(depth(queue).await.in_flight, 0);
}

/// Receives dead letters until `want` arrived (or the tries ran out), at most 10 per call.
async fn receive_dead_up_to(
    queue: &dyn Queue,
    want: usize,
    visibility: Duration,
) -> Vec<ackflow_core::DeadLetter> {
    let mut got = Vec::new();
    for _ in 0..TRIES {
        if got.len() >= want {
            break;
        }
        let max = (want - got.len()).min(10);
        let batch = queue
            .receive_dead_letters(max, visibility)
            .await
            .expect("receive dead letters");
        assert!(
            batch.len() <= max,
            "asked for at most {max} dead letters, got {}",
            batch.len()
        );
        got.extend(batch);
    }
    got
}

/// Puts one message with `body` and `attributes` in the dead-letter queue (with `dead_letter`).
async fn dead_letter_one(queue: &dyn Queue, body: &str, attributes: &[(&str, &str)]) {
    send(queue, message(body, attributes)).await;
    let d = receive_one(queue, LONG, "before dead-lettering it").await;
    queue.dead_letter(&d).await.expect("dead letter");
}

/// The redrive's receive: a dead letter comes with its body, attributes and a receipt, is hidden
/// in the dead-letter queue (still counted there, never delivered by the main queue) for the
/// visibility, comes back after it, and is gone once deleted with the latest receipt.
pub async fn a_received_dead_letter_is_hidden_for_its_visibility_then_deleted_by_its_receipt(
    queue: &dyn Queue,
    _max_receive_count: u32,
    h: &dyn Harness,
) {
    let attributes = [("ackflow-job-id", "j-dead"), ("ackflow-owner", "alice")];
    dead_letter_one(queue, "dead", &attributes).await;

    let got = receive_dead_up_to(queue, 1, VISIBILITY).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    let first = &got[0].delivery;
    assert_eq!(first.body, "dead");
    assert!(
        !first.receipt.0.is_empty(),
        "a dead letter received has a receipt"
    );
    assert_attributes_intact(
        &first.attributes,
        &attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let hidden = queue
        .receive_dead_letters(10, LONG)
        .await
        .expect("receive dead letters");
    assert!(hidden.is_empty(), "received twice at once: {hidden:#?}");
    assert_nothing_visible(queue, "a received dead letter went to the main queue").await;
    assert_eq!(
        depth(queue).await.dead,
        1,
        "a received dead letter is still counted"
    );

    h.pass(VISIBILITY + MARGIN).await;
    let again = receive_dead_up_to(queue, 1, LONG).await;
    assert_eq!(
        again.len(),
        1,
        "the dead letter did not come back: {again:#?}"
    );
    assert_eq!(again[0].delivery.body, "dead");
    queue
        .delete_dead_letter(&again[0].delivery.receipt)
        .await
        .expect("delete a dead letter");
    assert_eq!(depth(queue).await, QueueDepth::default());
    assert!(queue
        .dead_letters(10)
        .await
        .expect("dead letters")
        .is_empty());
}

/// A dead letter's receipt from an earlier receive deletes nothing, without an error: the
/// newer receive owns the dead letter.
pub async fn a_stale_dead_letter_receipt_cannot_delete_the_newer_receive(
    queue: &dyn Queue,
    _max_receive_count: u32,
    _h: &dyn Harness,
) {
    dead_letter_one(queue, "dead", &[("ackflow-job-id", "j-stale")]).await;
    // A zero visibility leaves it receivable at once, so the second receive takes it over.
    let stale = receive_dead_up_to(queue, 1, Duration::ZERO).await;
    assert_eq!(stale.len(), 1, "{stale:#?}");
    let current = receive_dead_up_to(queue, 1, LONG).await;
    assert_eq!(current.len(), 1, "{current:#?}");
    assert_ne!(stale[0].delivery.receipt, current[0].delivery.receipt);

    queue
        .delete_dead_letter(&stale[0].delivery.receipt)
        .await
        .expect("a stale delete is not an error");
    assert_eq!(
        depth(queue).await.dead,
        1,
        "a stale receipt deleted the dead letter"
    );
    queue
        .delete_dead_letter(&current[0].delivery.receipt)
        .await
        .expect("delete a dead letter");
    assert_eq!(depth(queue).await.dead, 0);
}

/// Depth counts waiting messages (delayed ones included), messages in flight and dead letters.
pub async fn depth_counts_waiting_in_flight_and_dead_messages(
    queue: &dyn Queue,
    _max_receive_count: u32,
    _h: &dyn Harness,
) {
    assert_eq!(depth(queue).await, QueueDepth::default());
    for body in ["a", "b", "c"] {
        send(queue, plain(body)).await;
    }
    let mut delayed = plain("delayed");
    delayed.delay = LONG;
    send(queue, delayed).await;
    assert_eq!(
        depth(queue).await,
        QueueDepth {
            waiting: 4,
            in_flight: 0,
            dead: 0
        }
    );

    let got = receive_up_to(queue, 2, LONG).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        !bodies(&got).contains("delayed"),
        "a delayed message was received"
    );
    assert_eq!(
        depth(queue).await,
        QueueDepth {
            waiting: 2,
            in_flight: 2,
            dead: 0
        }
    );

    queue.dead_letter(&got[0]).await.expect("dead letter");
    queue.delete(&got[1].receipt).await.expect("delete");
    assert_eq!(
        depth(queue).await,
        QueueDepth {
            waiting: 2,
            in_flight: 0,
            dead: 1
        }
    );
}

/// Bodies (JSON, Unicode, whitespace, 64 KiB) and attributes come back byte for byte.
pub async fn bodies_and_attributes_round_trip_unchanged(
    queue: &dyn Queue,
    _max_receive_count: u32,
    _h: &dyn Harness,
) {
    let big = "x".repeat(64 * 1024);
    let sent: Vec<OutgoingMessage> = vec![
        message(
            r#"{"v":1,"job":"0b6c5a6e-1f7e-4c1e-9d7a-2b1f3c4d5e6f","owner":"alice","generation":0}"#,
            &[
                ("ackflow-job-id", "0b6c5a6e-1f7e-4c1e-9d7a-2b1f3c4d5e6f"),
                ("ackflow-owner", "auth0|5f7c8ec7c33c6c004bbafe82"),
                ("ackflow-schema", "1"),
                ("ackflow-correlation-id", "req-42"),
            ],
        ),
        message(
            "Grüße — 日本語 🎉 \"quoted\" <tag> & ampersand",
            &[("note", "naïve café ☕"), ("spaces", "  padded  ")],
        ),
        message("  line one\n\tline two\r\nline three  ", &[]),
        message(&big, &[("size", "65536")]),
    ];
    for m in &sent {
        send(queue, m.clone()).await;
    }
    let got = receive_up_to(queue, sent.len(), LONG).await;
    assert_eq!(got.len(), sent.len(), "{got:#?}");
    for m in &sent {
        let d = got
            .iter()
            .find(|d| d.body == m.body)
            .unwrap_or_else(|| panic!("body changed or lost: {:.80?}", m.body));
        let expected: BTreeMap<String, String> = m.attributes.iter().cloned().collect();
        assert_eq!(d.attributes, expected, "attributes of {:.40?}", m.body);
    }
}

/// Ten messages come back in receives of at most ten, each exactly once while in flight.
pub async fn a_batch_of_ten_is_received_and_each_message_only_once(
    queue: &dyn Queue,
    _max_receive_count: u32,
    _h: &dyn Harness,
) {
    let sent: BTreeSet<String> = (0..10).map(|i| format!("message {i}")).collect();
    for body in &sent {
        send(queue, plain(body)).await;
    }
    let got = receive_up_to(queue, 10, LONG).await;
    assert_eq!(bodies(&got), sent);
    let ids: BTreeSet<&str> = got.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids.len(), 10, "message ids are unique");
    assert!(got.iter().all(|d| d.receive_count == 1));
    assert_nothing_visible(queue, "a message was delivered twice at once").await;
    for d in &got {
        queue.delete(&d.receipt).await.expect("delete");
    }
    assert_eq!(depth(queue).await, QueueDepth::default());
}
