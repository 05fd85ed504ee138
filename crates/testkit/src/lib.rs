//! # ackflow-testkit
//!
//! The behaviour suites every ackflow backend must pass, written once and run against each
//! adapter: SQLite on the single machine, SQS and DynamoDB (on moto server) for AWS. The idea
//! is object_store's: the suite is a set of public async functions that take the backend under
//! test, so a new backend gets every behaviour for free and cannot quietly differ.
//!
//! # Layout
//!
//! - [`redrive`]: the operator's redrive end to end on a backend ([`redrive_tests!`]).
//! - [`queue`], [`store`], [`orders`]: one `pub async fn` per behaviour of the [`ackflow_core::Queue`],
//!   [`ackflow_core::JobStore`] and [`ackflow_processors::order::OrderBook`] ports, named as the
//!   sentence it checks, so that a failing test names the broken promise.
//! - [`faults`]: [`faults::FaultyStore`] and [`faults::FaultyQueue`] wrap any port and inject
//!   what a [`faults::FaultPlan`] says (errors, latency, ambiguous writes, a crash between two
//!   writes, a call held until the test lets it through); every other call passes through.
//! - `wire` (feature `wire`): a fault-injecting HTTP proxy between the AWS SDK and moto server
//!   that loses answers after the write (a reset, a hang), answers 500 or throttling, or adds
//!   latency, per logical SDK call from a seeded plan or a script, and replays transactions by
//!   their token as DynamoDB does.
//! - `stream` (feature `wire`): a table's DynamoDB stream read from moto server, and a store
//!   whose report catches up with it before each read (the tests' event source mapping).
//! - [`paused`]: [`paused::ClockHeld`] keeps tokio's paused clock still while a store call is
//!   in flight, for stores that answer from threads of their own.
//! - [`invariants`]: the restarted runtime that brings jobs to rest, and the legality checks of
//!   a job at rest.
//! - [`Harness`]: how time passes for the backend: [`ManualTime`] moves a
//!   [`ManualClock`] (instant, for SQLite), [`RealTime`] really waits (for services over a
//!   network, which keep their own time).
//! - The fixtures ([`QueueFixture`], [`StoreFixture`], [`OrderBookFixture`]) and the macros
//!   [`queue_contract_tests!`], [`store_contract_tests!`], [`store_purge_tests!`] and
//!   [`order_book_contract_tests!`], which expand to one `#[tokio::test]` per behaviour, each on a
//!   fresh backend.
//!
//! # Running the suites against a backend
//!
//! ```text
//! async fn fresh_queue() -> QueueFixture<TempDir> { /* a new, empty queue */ }
//!
//! mod queue_contract {
//!     ackflow_testkit::queue_contract_tests!(super::fresh_queue);
//! }
//! ```
//!
//! The generated tests use `#[tokio::test]`, so the calling crate needs `tokio` (with the
//! `macros` and `rt-multi-thread` features) among its dev-dependencies. Against a backend on a
//! real clock, `queue_contract_tests!(together: fresh)` runs the queue behaviours concurrently
//! in one test, since they mostly wait.
//!
//! # Real networks, real time
//!
//! Every behaviour must hold over a real network with real time: durations are whole seconds
//! (SQS counts visibility and delays in seconds), every wait for a deadline adds
//! [`queue::MARGIN`], a backend may return fewer messages than asked per receive (the suite
//! receives again), and nothing assumes an order SQS does not promise.

// This crate is test code: a failed expectation is a failed test, and the message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{async_trait, Clock, JobStore, ManualClock, Queue, SystemClock, Timestamp};
use ackflow_processors::order::OrderBook;

pub mod faults;
pub mod invariants;
pub mod orders;
pub mod paused;
pub mod queue;
pub mod redrive;
pub mod store;
#[cfg(feature = "wire")]
pub mod stream;
#[cfg(feature = "wire")]
pub mod wire;

pub use redrive::RedriveFixture;

/// How time passes for the backend under test.
#[async_trait]
pub trait Harness: Send + Sync + fmt::Debug {
    /// The clock the backend reads (give the same one to the adapter).
    fn clock(&self) -> Arc<dyn Clock>;

    /// Lets `d` pass for the backend.
    async fn pass(&self, d: Duration);
}

/// Time that moves only when the suite says so: `pass` advances a [`ManualClock`] at once.
/// For backends that take their time from a [`Clock`] (SQLite).
#[derive(Debug, Clone)]
pub struct ManualTime {
    clock: Arc<ManualClock>,
}

impl ManualTime {
    /// 2026-03-01T00:00:00Z: a fixed start keeps runs reproducible.
    pub const START: Timestamp = Timestamp::from_millis(1_772_323_200_000);

    /// A clock stopped at [`ManualTime::START`].
    pub fn new() -> Self {
        Self::starting_at(Self::START)
    }

    /// A clock stopped at `start`.
    pub fn starting_at(start: Timestamp) -> Self {
        Self {
            clock: Arc::new(ManualClock::new(start)),
        }
    }

    /// The clock itself, for adapters that want an `Arc<ManualClock>`.
    pub fn manual_clock(&self) -> Arc<ManualClock> {
        Arc::clone(&self.clock)
    }
}

impl Default for ManualTime {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Harness for ManualTime {
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    async fn pass(&self, d: Duration) {
        self.clock.advance(d);
    }
}

/// Real time: `pass` sleeps. For backends that keep their own time (SQS, DynamoDB).
#[derive(Debug, Clone, Copy, Default)]
pub struct RealTime;

#[async_trait]
impl Harness for RealTime {
    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }

    async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// A fresh, empty queue for one behaviour. `guard` is kept alive until the behaviour ends
/// (a temporary directory, say).
#[derive(Debug)]
pub struct QueueFixture<G = ()> {
    /// The queue under test.
    pub queue: Arc<dyn Queue>,
    /// Its max receive count (SQS's redrive policy `maxReceiveCount`).
    pub max_receive_count: u32,
    /// How time passes for it.
    pub harness: Arc<dyn Harness>,
    /// Whatever must live as long as the queue.
    pub guard: G,
}

/// A fresh, empty job store for one behaviour.
#[derive(Debug)]
pub struct StoreFixture<G = ()> {
    /// The store under test.
    pub store: Arc<dyn JobStore>,
    /// How time passes for it (the suite starts its jobs' clock at its time).
    pub harness: Arc<dyn Harness>,
    /// Whatever must live as long as the store.
    pub guard: G,
}

/// A fresh order book for one behaviour, stocked from the catalog's initial stock.
#[derive(Debug)]
pub struct OrderBookFixture<G = ()> {
    /// The order book under test.
    pub book: Arc<dyn OrderBook>,
    /// Whatever must live as long as the order book.
    pub guard: G,
}

/// One `#[tokio::test]` per queue behaviour of [`queue`], each on a fresh
/// [`QueueFixture`] from the given `async fn`.
///
/// `queue_contract_tests!(together: fresh)` instead makes one test, `every_queue_behaviour`,
/// that runs all behaviours at once, each on its own fixture: with a real clock most of a
/// behaviour is waiting, so this takes as long as the slowest one instead of their sum. A
/// failure names the behaviour.
///
/// Attributes written before the fixture go on every generated test, for instance
/// `queue_contract_tests!(#[ignore = "needs moto server"] together: fresh)`.
#[macro_export]
macro_rules! queue_contract_tests {
    (@each $attrs:tt $fresh:path; $($name:ident),+ $(,)?) => {
        $( $crate::queue_contract_tests!(@one $attrs $fresh; $name); )+
    };
    (@one [$($attrs:tt)*] $fresh:path; $name:ident) => {
        $($attrs)*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let fixture = $fresh().await;
            $crate::queue::$name(
                &*fixture.queue,
                fixture.max_receive_count,
                &*fixture.harness,
            )
            .await;
            drop(fixture);
        }
    };
    (@together [$($attrs:tt)*] $fresh:path; $($name:ident),+ $(,)?) => {
        $($attrs)*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_queue_behaviour() {
            let mut running = ::tokio::task::JoinSet::new();
            let mut names = ::std::collections::HashMap::new();
            $(
                let task = running.spawn(async move {
                    let fixture = $fresh().await;
                    $crate::queue::$name(
                        &*fixture.queue,
                        fixture.max_receive_count,
                        &*fixture.harness,
                    )
                    .await;
                    drop(fixture);
                });
                names.insert(task.id(), stringify!($name));
            )+
            let mut failed = ::std::vec::Vec::new();
            while let Some(joined) = running.join_next_with_id().await {
                if let Err(e) = joined {
                    failed.push(names.get(&e.id()).copied().unwrap_or("?"));
                }
            }
            assert!(failed.is_empty(), "failed behaviours: {failed:?}");
        }
    };
    ($(#[$attr:meta])* together: $fresh:path) => {
        $crate::__queue_behaviours!([$(#[$attr])*] together $fresh);
    };
    ($(#[$attr:meta])* $fresh:path) => {
        $crate::__queue_behaviours!([$(#[$attr])*] each $fresh);
    };
}

/// The list of queue behaviours, written once for both forms of [`queue_contract_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __queue_behaviours {
    ([$($attrs:tt)*] $mode:ident $fresh:path) => {
        $crate::queue_contract_tests!(@$mode [$($attrs)*] $fresh;
            a_sent_message_is_received_with_its_body_and_attributes_then_deleted,
            a_received_message_is_invisible_until_its_visibility_timeout_then_returns_counted,
            change_visibility_postpones_a_message,
            change_visibility_to_zero_makes_a_message_visible_at_once,
            a_receipt_still_deletes_its_message_after_a_visibility_change,
            a_delayed_message_is_invisible_until_its_delay_passes,
            a_stale_receipt_cannot_delete_the_newer_delivery,
            a_stale_receipt_cannot_change_the_visibility_of_the_newer_delivery,
            the_receive_after_the_last_allowed_one_moves_a_message_to_the_dead_letter_queue,
            dead_letter_moves_a_received_message_at_once,
            a_received_dead_letter_is_hidden_for_its_visibility_then_deleted_by_its_receipt,
            a_stale_dead_letter_receipt_cannot_delete_the_newer_receive,
            depth_counts_waiting_in_flight_and_dead_messages,
            bodies_and_attributes_round_trip_unchanged,
            a_batch_of_ten_is_received_and_each_message_only_once,
        );
    };
}

/// One `#[tokio::test]` per job-store behaviour of [`store`] (all but the purge, see
/// [`store_purge_tests!`]), each on a fresh [`StoreFixture`] from the given `async fn`.
/// Attributes written before the fixture go on every generated test.
#[macro_export]
macro_rules! store_contract_tests {
    (@each $attrs:tt $fresh:path; $($name:ident),+ $(,)?) => {
        $( $crate::store_contract_tests!(@one $attrs $fresh; $name); )+
    };
    (@one [$($attrs:tt)*] $fresh:path; $name:ident) => {
        $($attrs)*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let fixture = $fresh().await;
            $crate::store::$name(&*fixture.store, &*fixture.harness).await;
            drop(fixture);
        }
    };
    ($(#[$attr:meta])* $fresh:path) => {
        $crate::store_contract_tests!(@each [$(#[$attr])*] $fresh;
            a_created_job_reads_back_with_its_input,
            another_owner_cannot_read_or_list_a_job,
            the_same_key_and_body_return_the_existing_job_and_write_nothing,
            the_same_key_with_another_body_is_reported_and_writes_nothing,
            idempotency_keys_are_scoped_by_owner,
            a_stale_revision_is_a_conflict_and_changes_nothing,
            a_result_is_stored_with_the_write_that_succeeds_the_job,
            gauges_follow_every_transition,
            counters_count_within_the_window_and_not_outside_it,
            the_oldest_open_job_is_the_oldest_non_terminal_one,
            listing_is_newest_first_and_filters_by_state_and_kind,
            pages_with_cursors_cover_every_job_exactly_once,
            due_for_sweep_returns_only_open_jobs_whose_time_has_come,
        );
    };
}

/// The purge behaviours of [`store`], apart because a backend whose items expire by
/// themselves (DynamoDB TTL) returns 0 from `purge_expired` and skips them.
#[macro_export]
macro_rules! store_purge_tests {
    ($(#[$attr:meta])* $fresh:path) => {
        $crate::store_contract_tests!(@each [$(#[$attr])*] $fresh;
            purge_deletes_only_expired_terminal_jobs_and_frees_their_key,
            purge_takes_at_most_its_limit,
        );
    };
}

/// One `#[tokio::test]` per order-book behaviour of [`orders`], each on a fresh
/// [`OrderBookFixture`] from the given `async fn`. Attributes written before the fixture go on
/// every generated test.
#[macro_export]
macro_rules! order_book_contract_tests {
    (@each $attrs:tt $fresh:path; $($name:ident),+ $(,)?) => {
        $( $crate::order_book_contract_tests!(@one $attrs $fresh; $name); )+
    };
    (@one [$($attrs:tt)*] $fresh:path; $name:ident) => {
        $($attrs)*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let fixture = $fresh().await;
            $crate::orders::$name(::std::sync::Arc::clone(&fixture.book)).await;
            drop(fixture);
        }
    };
    ($(#[$attr:meta])* $fresh:path) => {
        $crate::order_book_contract_tests!(@each [$(#[$attr])*] $fresh;
            a_reservation_takes_its_quantities_from_stock,
            a_reservation_is_all_or_nothing_when_one_line_is_short,
            an_unknown_sku_is_refused_and_changes_nothing,
            a_second_reservation_for_the_same_order_takes_nothing_more,
            a_refused_reservation_does_not_block_a_later_one_for_the_same_order,
            concurrent_reservations_never_oversell,
            confirming_an_order_again_changes_nothing,
        );
    };
}

/// One `#[tokio::test]` per scenario of [`redrive`], each on a fresh [`RedriveFixture`] from the
/// given `async fn`. Attributes written before the fixture go on every generated test.
#[macro_export]
macro_rules! redrive_tests {
    (@each $attrs:tt $fresh:path; $($name:ident),+ $(,)?) => {
        $( $crate::redrive_tests!(@one $attrs $fresh; $name); )+
    };
    (@one [$($attrs:tt)*] $fresh:path; $name:ident) => {
        $($attrs)*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $crate::redrive::$name($fresh().await).await;
        }
    };
    ($(#[$attr:meta])* $fresh:path) => {
        $crate::redrive_tests!(@each [$(#[$attr])*] $fresh;
            a_failed_dead_lettered_job_is_reopened_by_the_redrive_and_then_succeeds,
            a_queued_dead_lettered_job_is_sent_again_by_the_redrive_and_then_succeeds,
            a_finished_jobs_copy_is_discarded_and_an_unreadable_message_stays,
        );
    };
}
