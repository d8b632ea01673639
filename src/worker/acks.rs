//! Settling deliveries, one acker per consuming channel: processing tasks report
//! `(delivery_tag, Ack | Requeue)` and return at once; one task per channel sends what is ready
//! now, fewest frames first:
//!
//! - a requeue is a `basic.nack` of its own tag, sent at once and before any ack of the same
//!   batch (once the broker has it, the tag is settled there, so no later multiple-ack covers it);
//! - the acks of the completed tags below the lowest tag still in flight are one `basic.ack` with
//!   `multiple` (it settles every unsettled tag up to its own: exactly those);
//! - an ack above a tag still in flight is sent on its own at once: a slow request (a provider
//!   call, a wait for another delivery's lease) never holds other requests' acks, nor the
//!   prefetch window they occupy.
//!
//! Nothing waits for more work: the acker wakes on each report, lets tasks that are ready to run
//! go once (`yield_now`, no IO wait), and takes everything reported by then. Under light load
//! that is one ack per delivery, at once; with a backlog (300 duplicates answered from the stored
//! result, concurrency 16) about 180–230 frames settled 301 deliveries. A tag is acknowledged only when its own task reported `Ack` (its result stored and its
//! publish confirmed); a tag whose task never reports (a panic outside the processing, an abort at
//! a hard stop) stays unsettled and bounds the multiple-acks below it, and the broker redelivers
//! it when the channel closes. Tags belong to one channel: a new channel gets a new acker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::warn;

use super::Disposition;

/// What one delivery's task reported, or that it is still in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    InFlight,
    Done(Disposition),
}

/// One frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `basic.ack` of `tag`; with `multiple`, of every unsettled tag up to it as well.
    Ack {
        /// The (highest) delivery tag.
        tag: u64,
        /// Every unsettled tag up to `tag`.
        multiple: bool,
    },
    /// `basic.nack` of `tag` alone, requeued.
    Requeue {
        /// The delivery tag.
        tag: u64,
    },
}

/// The deliveries of one channel not yet settled (pure: no IO).
#[derive(Debug, Default)]
pub struct Ledger {
    slots: BTreeMap<u64, Slot>,
}

impl Ledger {
    /// A delivery was handed to a task.
    pub fn delivered(&mut self, tag: u64) {
        self.slots.insert(tag, Slot::InFlight);
    }

    /// Its task is done with it. A tag never delivered (or already settled) is ignored.
    pub fn report(&mut self, tag: u64, disposition: Disposition) {
        if let Some(slot) = self.slots.get_mut(&tag) {
            *slot = Slot::Done(disposition);
        }
    }

    /// Tags delivered and not yet settled by [`Ledger::take_frames`].
    pub fn unsettled(&self) -> usize {
        self.slots.len()
    }

    /// Whether any tag's task has not reported yet.
    pub fn in_flight(&self) -> bool {
        self.slots.values().any(|s| *s == Slot::InFlight)
    }

    /// The frames that settle every reported tag, in the order they must be sent (requeues
    /// first); the reported tags leave the ledger.
    pub fn take_frames(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        self.slots.retain(|&tag, slot| {
            if *slot == Slot::Done(Disposition::Requeue) {
                frames.push(Frame::Requeue { tag });
                false
            } else {
                true
            }
        });
        // Below the lowest tag in flight every tag left is acknowledged: one multiple-ack.
        let bound = self
            .slots
            .iter()
            .find(|(_, s)| **s == Slot::InFlight)
            .map(|(t, _)| *t);
        let below: Vec<u64> = self
            .slots
            .keys()
            .copied()
            .take_while(|t| bound.is_none_or(|b| *t < b))
            .collect();
        if let Some(&top) = below.last() {
            frames.push(Frame::Ack {
                tag: top,
                multiple: below.len() > 1,
            });
            for t in &below {
                self.slots.remove(t);
            }
        }
        // Above it, each on its own: a multiple-ack would cover the tag in flight.
        self.slots.retain(|&tag, slot| {
            if *slot == Slot::Done(Disposition::Ack) {
                frames.push(Frame::Ack {
                    tag,
                    multiple: false,
                });
                false
            } else {
                true
            }
        });
        frames
    }
}

struct Shared {
    ledger: Mutex<Ledger>,
    wake: Notify,
    /// No more deliveries: the acker ends once nothing is in flight.
    closing: std::sync::atomic::AtomicBool,
    /// Shutdown: the acker sends what is reported, then ends (what is in flight stays unsettled).
    stopping: std::sync::atomic::AtomicBool,
    /// [`Settle`] handles alive: tasks that may still report.
    reporters: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The acker of one consuming channel. Dropping it lets its task end once every delivery in
/// flight is reported and settled, or its task is gone without reporting (then the channel,
/// dropped, closes and the broker redelivers what is unsettled).
pub struct Acker {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// What the task of one delivery reports to, once.
pub struct Settle {
    shared: Arc<Shared>,
    tag: u64,
    reported: bool,
}

impl Settle {
    /// Report the task's verdict on its delivery; returns at once (the acker sends it).
    pub fn report(mut self, disposition: Disposition) {
        self.shared.ledger().report(self.tag, disposition);
        self.reported = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.shared
            .reporters
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if !self.reported {
            // The task ended without a verdict (a panic, an abort): its delivery stays
            // unsettled; a closing acker checks whether anyone can still report.
            self.shared.wake.notify_one();
        }
    }
}

impl Acker {
    /// Start the acker of `channel` (on the current runtime).
    pub fn start(channel: Channel) -> Acker {
        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger::default()),
            wake: Notify::new(),
            closing: Default::default(),
            stopping: Default::default(),
            reporters: Default::default(),
        });
        let task = tokio::spawn(run(shared.clone(), channel));
        Acker {
            shared,
            task: Some(task),
        }
    }

    /// Record a delivery before its task starts; the task reports to the returned handle.
    pub fn delivered(&self, tag: u64) -> Settle {
        self.shared.ledger().delivered(tag);
        self.shared
            .reporters
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Settle {
            shared: self.shared.clone(),
            tag,
            reported: false,
        }
    }

    /// Send what is reported, then end (waiting up to `timeout`). Deliveries still in flight stay
    /// unsettled: the broker redelivers them when the channel closes.
    pub async fn finish(mut self, timeout: Duration) {
        use std::sync::atomic::Ordering;
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(timeout, task).await;
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

async fn run(shared: Arc<Shared>, channel: Channel) {
    use std::sync::atomic::Ordering;
    loop {
        shared.wake.notified().await;
        // Let tasks that are ready to run report first (no waiting for IO or new work).
        tokio::task::yield_now().await;
        let frames = shared.ledger().take_frames();
        for frame in frames {
            tracing::trace!(?frame, "settling");
            if let Err(e) = send(&channel, frame).await {
                // The channel is gone: the broker redelivers every unsettled tag; a stored
                // result answers each.
                let unsettled = shared.ledger().unsettled();
                warn!(error = %e, ?frame, unsettled, "could not settle deliveries: the channel is closed; they will be redelivered");
                return;
            }
        }
        // Closing: done when nothing is in flight, or no task is left to report.
        if shared.stopping.load(Ordering::SeqCst)
            || (shared.closing.load(Ordering::SeqCst)
                && (!shared.ledger().in_flight() || shared.reporters.load(Ordering::SeqCst) == 0))
        {
            // Anything reported meanwhile was woken for: one more pass sends it.
            let frames = shared.ledger().take_frames();
            for frame in frames {
                if send(&channel, frame).await.is_err() {
                    return;
                }
            }
            return;
        }
    }
}

async fn send(channel: &Channel, frame: Frame) -> Result<(), lapin::Error> {
    match frame {
        Frame::Ack { tag, multiple } => channel.basic_ack(tag, BasicAckOptions { multiple }).await,
        Frame::Requeue { tag } => {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disposition::{Ack, Requeue};

    fn ledger(delivered: impl IntoIterator<Item = u64>) -> Ledger {
        let mut l = Ledger::default();
        for t in delivered {
            l.delivered(t);
        }
        l
    }

    fn ack(tag: u64, multiple: bool) -> Frame {
        Frame::Ack { tag, multiple }
    }

    #[test]
    fn a_single_delivery_is_acked_on_its_own_at_once() {
        let mut l = ledger([1]);
        assert_eq!(l.take_frames(), vec![]);
        l.report(1, Ack);
        assert_eq!(l.take_frames(), vec![ack(1, false)]);
        assert_eq!(l.unsettled(), 0);
        assert_eq!(l.take_frames(), vec![]);
    }

    #[test]
    fn a_completed_run_from_the_lowest_tag_is_one_multiple_ack() {
        let mut l = ledger(1..=5);
        for t in [3, 1, 2] {
            l.report(t, Ack);
        }
        assert_eq!(l.take_frames(), vec![ack(3, true)]);
        l.report(5, Ack);
        l.report(4, Ack);
        assert_eq!(l.take_frames(), vec![ack(5, true)]);
        assert_eq!(l.unsettled(), 0);
    }

    #[test]
    fn the_lowest_tag_in_flight_bounds_the_multiple_ack_and_acks_above_it_go_alone() {
        let mut l = ledger(1..=6);
        for t in [1, 2, 4, 6] {
            l.report(t, Ack);
        }
        // 3 and 5 are in flight: 1–2 together, 4 and 6 each alone (never covering 3 or 5).
        assert_eq!(
            l.take_frames(),
            vec![ack(2, true), ack(4, false), ack(6, false)]
        );
        assert!(l.in_flight());
        l.report(5, Ack);
        assert_eq!(l.take_frames(), vec![ack(5, false)]);
        l.report(3, Ack);
        assert_eq!(l.take_frames(), vec![ack(3, false)]);
        assert_eq!(l.unsettled(), 0);
    }

    #[test]
    fn a_requeue_goes_alone_at_once_and_before_any_ack_above_it() {
        let mut l = ledger(1..=4);
        l.report(2, Requeue);
        assert_eq!(l.take_frames(), vec![Frame::Requeue { tag: 2 }]);
        // 2 is settled (nacked): the run 1, 3, 4 is one multiple-ack once the broker has the
        // nack; it covers only the still unsettled 1, 3 and 4.
        for t in [1, 3, 4] {
            l.report(t, Ack);
        }
        assert_eq!(l.take_frames(), vec![ack(4, true)]);

        let mut l = ledger(1..=4);
        for t in [1, 3, 4] {
            l.report(t, Ack);
        }
        l.report(2, Requeue);
        // Reported together: the nack first, then one multiple-ack over the rest.
        assert_eq!(
            l.take_frames(),
            vec![Frame::Requeue { tag: 2 }, ack(4, true)]
        );
    }

    #[test]
    fn a_requeue_below_a_tag_in_flight_does_not_unblock_acks_above_it() {
        let mut l = ledger(1..=4);
        l.report(1, Requeue);
        l.report(3, Ack);
        l.report(4, Ack);
        // 2 is in flight: 3 and 4 each alone.
        assert_eq!(
            l.take_frames(),
            vec![Frame::Requeue { tag: 1 }, ack(3, false), ack(4, false)]
        );
        l.report(2, Requeue);
        assert_eq!(l.take_frames(), vec![Frame::Requeue { tag: 2 }]);
        assert_eq!(l.unsettled(), 0);
    }

    #[test]
    fn a_tag_never_reported_stays_unsettled_and_bounds_the_acks_below_it() {
        let mut l = ledger(1..=3);
        l.report(1, Ack);
        l.report(3, Ack);
        assert_eq!(l.take_frames(), vec![ack(1, false), ack(3, false)]);
        assert_eq!(l.unsettled(), 1);
        assert!(l.in_flight());
        l.delivered(4);
        l.delivered(5);
        l.report(4, Ack);
        l.report(5, Ack);
        assert_eq!(l.take_frames(), vec![ack(4, false), ack(5, false)]);
    }

    #[test]
    fn unknown_or_repeated_reports_are_ignored() {
        let mut l = ledger([7]);
        l.report(9, Ack);
        assert_eq!(l.take_frames(), vec![]);
        l.report(7, Ack);
        assert_eq!(l.take_frames(), vec![ack(7, false)]);
        l.report(7, Requeue);
        assert_eq!(l.take_frames(), vec![]);
    }
}
