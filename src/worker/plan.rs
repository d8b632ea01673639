//! The worker's core as a pure state machine: given the route, the calls made so far (the
//! journal on a resume included), the last reply and the clock, what happens next for one
//! request — call a provider, wait, wait for a circuit, or finish with a given outcome. No IO:
//! [`super::process`] asks and does the IO.

use std::time::Duration;

use tokio::time::Instant;

use crate::check::{Classification, ProviderReply};
use crate::retry::{decide, Decision, RetryPolicy};
use crate::store::JournaledCall;

/// The next thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Call this provider now (its slot in the shared bucket first).
    Call(&'static str),
    /// Wait this long (a backoff before calling the same provider again), then ask again.
    Sleep(Duration),
    /// Every provider of the route is out (open circuits): wait until this instant, then ask
    /// again.
    WaitForCircuit(Instant),
    /// The request is finished.
    Finish(Finish),
}

/// How a request ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Finish {
    /// A provider's final answer (verdict, invalid field, refusal, identity limit, unknown code).
    Answered(&'static str, ProviderReply),
    /// Sent and no whole answer: billing unknown, never called again; dead-lettered.
    BillingUnknown(&'static str, ProviderReply),
    /// Transient failures outlasted the retry budget on every provider; dead-lettered.
    RetriesExhausted(&'static str, ProviderReply),
    /// Every provider of the route stayed out (open circuits) past the maximum wait; not
    /// billed, dead-lettered, retryable.
    ProviderUnavailable(&'static str, ProviderReply),
}

/// How a request that has to wait does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Briefly, in its worker slot.
    InSlot(Duration),
    /// In the wait queue for this long: the worker slot is free meanwhile.
    Park(Duration),
    /// It has waited longer than the maximum: finish `provider_unavailable`.
    GiveUp,
}

/// The bounds of waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    /// A wait up to this long is spent in the slot (parking costs a publish and a delivery).
    pub in_slot_max: Duration,
    /// The longest one stay in the wait queue (`worker.park_max_secs`).
    pub park_max: Duration,
    /// The longest a request waits for a provider in all (`worker.max_wait_secs`).
    pub max_wait: Duration,
}

impl WaitPolicy {
    /// What a request does that must wait `left` more (until a circuit reopens, a lease runs
    /// out) and has waited `waited` since its first wait — None when no deadline applies (a
    /// request another live worker holds: that worker's own bounds end it).
    pub fn decide(&self, left: Duration, waited: Option<Duration>) -> Waiting {
        if waited.is_some_and(|w| w >= self.max_wait) {
            return Waiting::GiveUp;
        }
        if left <= self.in_slot_max {
            return Waiting::InSlot(left);
        }
        let mut park = left.min(self.park_max);
        if let Some(w) = waited {
            park = park.min(self.max_wait - w);
        }
        Waiting::Park(park.max(self.in_slot_max))
    }
}

/// What a reply does to the provider's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    /// Nothing.
    Keep,
    /// A final answer: the provider works.
    Reset,
    /// A provider-wide failure: keep it out for its cool-down.
    Trip,
}

/// One request's walk along its route.
#[derive(Debug)]
pub struct Plan {
    route: Vec<&'static str>,
    policy: RetryPolicy,
    seed: Option<u64>,
    started: Instant,
    attempts: u32,
    position: usize,
    delays: Vec<Duration>,
    pending: Option<Duration>,
    saw_transient: bool,
    last: Option<(&'static str, ProviderReply)>,
    finished: Option<Finish>,
}

impl Plan {
    /// A walk along `route` starting at `started`, after `attempts` calls already journaled.
    /// `seed` fixes the backoff jitter (tests).
    pub fn new(
        route: Vec<&'static str>,
        policy: RetryPolicy,
        attempts: u32,
        started: Instant,
        seed: Option<u64>,
    ) -> Plan {
        let mut p = Plan {
            route,
            policy,
            seed,
            started,
            attempts,
            position: 0,
            delays: Vec::new(),
            pending: None,
            saw_transient: false,
            last: None,
            finished: None,
        };
        p.reset_delays();
        p
    }

    /// Calls made for this request so far (the journal's included): the next call's attempt
    /// number is one more.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Count an attempt that was journaled but never sent (its slot and row were taken, then
    /// the provider's circuit opened): the numbering moves on, nothing else — it is no failure
    /// of the provider's and uses up no retry.
    pub fn skip_attempt(&mut self) {
        self.attempts += 1;
    }

    /// What to do now. `reopens_at(provider)` says when a provider's circuit lets calls through
    /// again (None: available now).
    pub fn next(&mut self, now: Instant, reopens_at: impl Fn(&str) -> Option<Instant>) -> Step {
        if let Some(f) = &self.finished {
            return Step::Finish(f.clone());
        }
        if let Some(d) = self.pending.take() {
            return Step::Sleep(d);
        }
        while let Some(provider) = self.route.get(self.position).copied() {
            if reopens_at(provider).is_none() {
                return Step::Call(provider);
            }
            self.advance();
        }
        if self.saw_transient {
            let (provider, reply) = self.last.clone().expect("a transient reply was recorded");
            let f = Finish::RetriesExhausted(provider, reply);
            self.finished = Some(f.clone());
            return Step::Finish(f);
        }
        // Every provider is out: walk the route again once the first circuit reopens.
        self.position = 0;
        self.reset_delays();
        let reopen = self
            .route
            .iter()
            .filter_map(|p| reopens_at(p))
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        Step::WaitForCircuit(reopen.max(now))
    }

    /// How the request ends when every provider stayed out past the maximum wait: with the
    /// last provider-wide refusal this walk saw, or (none seen: every circuit was already open)
    /// a reply saying so about the route's first provider.
    pub fn unavailable(&self) -> Finish {
        let (provider, reply) = self.last.clone().unwrap_or_else(|| {
            (
                self.route.first().copied().unwrap_or("unknown"),
                ProviderReply::transport(
                    Classification::PROVIDER_WIDE,
                    None,
                    format!(
                        "every provider of the route ({}) is out: circuits open after \
                         provider-wide refusals",
                        self.route.join(", ")
                    ),
                ),
            )
        });
        Finish::ProviderUnavailable(provider, reply)
    }

    /// The reply of the call [`Plan::next`] asked for, at `now`. Returns what it does to the
    /// provider's circuit.
    pub fn record(
        &mut self,
        provider: &'static str,
        reply: ProviderReply,
        now: Instant,
    ) -> Circuit {
        self.attempts += 1;
        match decide(&reply.classification) {
            Decision::Finish => {
                self.finished = Some(Finish::Answered(provider, reply));
                Circuit::Reset
            }
            Decision::StopBillingUnknown => {
                self.finished = Some(Finish::BillingUnknown(provider, reply));
                Circuit::Keep
            }
            Decision::Retry => {
                self.saw_transient = true;
                self.last = Some((provider, reply));
                let elapsed = now.saturating_duration_since(self.started);
                match self.delays.first().copied() {
                    Some(d) if elapsed + d <= self.policy.max_elapsed => {
                        self.delays.remove(0);
                        self.pending = Some(d);
                    }
                    _ => self.advance(),
                }
                Circuit::Keep
            }
            Decision::FailOver => {
                self.last = Some((provider, reply));
                self.advance();
                Circuit::Trip
            }
        }
    }

    fn advance(&mut self) {
        self.position += 1;
        self.reset_delays();
    }

    fn reset_delays(&mut self) {
        self.delays = self.policy.delays(self.seed).collect();
    }
}

/// A request taken over after a crash: whether the journal already decides it, without
/// calling anybody again. A call journaled as sent with no outcome may have been billed.
pub fn resume(journal: &[JournaledCall]) -> Option<Finish> {
    for call in journal {
        let provider =
            crate::providers::registry::vendor(&call.provider).map_or("unknown", |v| v.name);
        let Some(reply) = &call.reply else {
            return Some(Finish::BillingUnknown(
                provider,
                ProviderReply::transport(
                    Classification::UNKNOWN,
                    None,
                    "a call was in flight when the previous worker stopped",
                ),
            ));
        };
        match decide(&reply.classification) {
            Decision::Finish => return Some(Finish::Answered(provider, reply.clone())),
            Decision::StopBillingUnknown => {
                return Some(Finish::BillingUnknown(provider, reply.clone()))
            }
            Decision::Retry | Decision::FailOver => {}
        }
    }
    None
}

/// The attempts a journal holds (the highest attempt number).
pub fn journaled_attempts(journal: &[JournaledCall]) -> u32 {
    journal.iter().map(|c| c.attempt as u32).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_never_sent_moves_the_numbering_on_and_costs_no_retry() {
        let mut p = Plan::new(vec!["a"], policy(), 0, Instant::now(), Some(1));
        p.skip_attempt();
        assert_eq!(p.attempts(), 1);
        // Still the first provider, at once: no backoff, no failure recorded.
        assert!(matches!(p.next(Instant::now(), |_| None), Step::Call("a")));
    }
    use crate::check::{Billed, ReasonCode};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            multiplier: 2.0,
            jitter: false,
            max_elapsed: Duration::from_secs(10),
        }
    }

    fn reply(c: Classification) -> ProviderReply {
        ProviderReply::transport(c, Some(200), "x")
    }

    const MATCH: Classification = Classification::verdict(ReasonCode::Match, Billed::Yes);

    fn open(_: &str) -> Option<Instant> {
        None
    }

    #[test]
    fn waiting_is_in_the_slot_when_short_parked_when_long_and_bounded_in_all() {
        let w = WaitPolicy {
            in_slot_max: Duration::from_secs(1),
            park_max: Duration::from_secs(30),
            max_wait: Duration::from_secs(600),
        };
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(w.decide(ms(300), Some(s(0))), Waiting::InSlot(ms(300)));
        assert_eq!(w.decide(s(1), None), Waiting::InSlot(s(1)));
        // Until the circuit reopens, at most park_max at a time.
        assert_eq!(w.decide(s(12), Some(s(0))), Waiting::Park(s(12)));
        assert_eq!(w.decide(s(300), Some(s(5))), Waiting::Park(s(30)));
        assert_eq!(w.decide(s(300), None), Waiting::Park(s(30)));
        // Never parked past the maximum wait, and never for less than the in-slot bound.
        assert_eq!(w.decide(s(300), Some(s(590))), Waiting::Park(s(10)));
        assert_eq!(w.decide(s(300), Some(ms(599_800))), Waiting::Park(s(1)));
        assert_eq!(w.decide(s(300), Some(s(600))), Waiting::GiveUp);
        assert_eq!(w.decide(ms(10), Some(s(601))), Waiting::GiveUp);
    }

    #[test]
    fn unavailable_names_the_last_refusal_or_the_route() {
        let t0 = Instant::now();
        let mut plan = Plan::new(vec!["a", "b"], policy(), 0, t0, None);
        match plan.unavailable() {
            Finish::ProviderUnavailable("a", r) => {
                assert_eq!(r.classification, Classification::PROVIDER_WIDE);
                assert!(r.detail.contains("(a, b)"), "{}", r.detail);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.next(t0, open), Step::Call("a"));
        plan.record("a", reply(Classification::PROVIDER_WIDE), t0);
        assert_eq!(plan.next(t0, open), Step::Call("b"));
        plan.record("b", reply(Classification::PROVIDER_WIDE), t0);
        assert!(matches!(
            plan.unavailable(),
            Finish::ProviderUnavailable("b", _)
        ));
    }

    /// Drives a plan with scripted replies per provider (all circuits closed) and returns the
    /// steps it took.
    fn run(route: &[&'static str], replies: &[(&str, Classification)]) -> Vec<Step> {
        let t0 = Instant::now();
        let mut plan = Plan::new(route.to_vec(), policy(), 0, t0, None);
        let mut script = replies.iter();
        let mut steps = Vec::new();
        let mut now = t0;
        for _ in 0..50 {
            let step = plan.next(now, open);
            steps.push(step.clone());
            match step {
                Step::Call(p) => {
                    let (who, c) = script.next().expect("a scripted reply");
                    assert_eq!(*who, p, "called {p}, script says {who}");
                    plan.record(p, reply(*c), now);
                }
                Step::Sleep(d) => now += d,
                Step::WaitForCircuit(_) | Step::Finish(_) => return steps,
            }
        }
        panic!("no end: {steps:?}");
    }

    fn calls(steps: &[Step]) -> Vec<&'static str> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Call(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_final_answer_finishes_at_once() {
        for c in [
            MATCH,
            Classification::invalid_field(ReasonCode::InvalidMobile),
            Classification::request_refused(),
            Classification::identity_limit(ReasonCode::IdentityDailyLimit),
            Classification::unknown_code(Billed::Unknown),
        ] {
            let steps = run(&["a", "b"], &[("a", c)]);
            assert_eq!(calls(&steps), ["a"]);
            assert!(
                matches!(steps.last(), Some(Step::Finish(Finish::Answered("a", r))) if r.classification == c)
            );
        }
    }

    #[test]
    fn transient_failures_retry_with_backoff_then_fail_over_then_exhaust() {
        let t = Classification::TRANSIENT;
        let steps = run(
            &["a", "b"],
            &[("a", t), ("a", t), ("a", t), ("b", t), ("b", t), ("b", t)],
        );
        assert_eq!(calls(&steps), ["a", "a", "a", "b", "b", "b"]);
        let sleeps: Vec<u128> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Sleep(d) => Some(d.as_millis()),
                _ => None,
            })
            .collect();
        // Two delays per provider (3 calls), the backoff starting afresh for each provider.
        assert_eq!(sleeps, [100, 200, 100, 200]);
        assert!(matches!(
            steps.last(),
            Some(Step::Finish(Finish::RetriesExhausted("b", _)))
        ));
        // A transient failure then an answer from the same provider.
        let steps = run(&["a", "b"], &[("a", t), ("a", MATCH)]);
        assert_eq!(calls(&steps), ["a", "a"]);
        assert!(matches!(
            steps.last(),
            Some(Step::Finish(Finish::Answered("a", _)))
        ));
    }

    #[test]
    fn the_retry_budget_in_time_cuts_backoff_short() {
        let t0 = Instant::now();
        let mut plan = Plan::new(vec!["a", "b"], policy(), 0, t0, None);
        assert_eq!(plan.next(t0, open), Step::Call("a"));
        // 9.95 s in: a 100 ms delay would overrun the 10 s budget: fail over at once.
        plan.record(
            "a",
            reply(Classification::TRANSIENT),
            t0 + Duration::from_millis(9_950),
        );
        assert_eq!(plan.next(t0, open), Step::Call("b"));
    }

    #[test]
    fn billing_unknown_is_never_called_again() {
        let steps = run(&["a", "b"], &[("a", Classification::UNKNOWN)]);
        assert_eq!(calls(&steps), ["a"]);
        assert!(matches!(
            steps.last(),
            Some(Step::Finish(Finish::BillingUnknown("a", _)))
        ));
    }

    #[test]
    fn provider_wide_trips_the_circuit_and_fails_over() {
        let t0 = Instant::now();
        let mut plan = Plan::new(vec!["a", "b"], policy(), 0, t0, None);
        assert_eq!(plan.next(t0, open), Step::Call("a"));
        assert_eq!(
            plan.record("a", reply(Classification::PROVIDER_WIDE), t0),
            Circuit::Trip
        );
        assert_eq!(plan.next(t0, open), Step::Call("b"));
        assert_eq!(plan.record("b", reply(MATCH), t0), Circuit::Reset);
        assert_eq!(plan.attempts(), 2);
        assert!(matches!(
            plan.next(t0, open),
            Step::Finish(Finish::Answered("b", _))
        ));
    }

    #[test]
    fn open_circuits_are_skipped_and_all_open_waits_for_the_first_to_reopen() {
        let t0 = Instant::now();
        let reopen_a = t0 + Duration::from_secs(30);
        let reopen_b = t0 + Duration::from_secs(5);
        let mut plan = Plan::new(vec!["a", "b"], policy(), 0, t0, None);
        let a_out = |p: &str| (p == "a").then_some(reopen_a);
        assert_eq!(plan.next(t0, a_out), Step::Call("b"));
        let mut plan = Plan::new(vec!["a", "b"], policy(), 0, t0, None);
        let all_out = |p: &str| Some(if p == "a" { reopen_a } else { reopen_b });
        assert_eq!(plan.next(t0, all_out), Step::WaitForCircuit(reopen_b));
        // After the wait the route is walked again from its head.
        assert_eq!(plan.next(reopen_b, open), Step::Call("a"));
        // Provider-wide everywhere: the request waits rather than fails (nothing was billed).
        let mut plan = Plan::new(vec!["a"], policy(), 0, t0, None);
        assert_eq!(plan.next(t0, open), Step::Call("a"));
        plan.record("a", reply(Classification::PROVIDER_WIDE), t0);
        let tripped = |_: &str| Some(reopen_b);
        assert_eq!(plan.next(t0, tripped), Step::WaitForCircuit(reopen_b));
    }

    #[test]
    fn attempts_continue_from_the_journal() {
        let t0 = Instant::now();
        let mut plan = Plan::new(vec!["a"], policy(), 4, t0, None);
        assert_eq!(plan.attempts(), 4);
        plan.next(t0, open);
        plan.record("a", reply(MATCH), t0);
        assert_eq!(plan.attempts(), 5);
    }

    fn journaled(provider: &str, attempt: i32, c: Option<Classification>) -> JournaledCall {
        JournaledCall {
            id: attempt as i64,
            provider: provider.into(),
            attempt,
            reply: c.map(reply),
        }
    }

    #[test]
    fn resume_finishes_from_the_journal_or_walks_again() {
        let t = Some(Classification::TRANSIENT);
        assert_eq!(resume(&[]), None);
        assert_eq!(resume(&[journaled("tencent", 1, t)]), None);
        assert_eq!(
            resume(&[journaled("tencent", 1, Some(Classification::PROVIDER_WIDE))]),
            None
        );
        assert!(matches!(
            resume(&[
                journaled("tencent", 1, t),
                journaled("alibaba", 2, Some(MATCH))
            ]),
            Some(Finish::Answered("alibaba", _))
        ));
        // A call in flight when the previous worker died may have been billed.
        assert!(matches!(
            resume(&[journaled("tencent", 1, t), journaled("tencent", 2, None)]),
            Some(Finish::BillingUnknown("tencent", r)) if r.classification.billed == Billed::Unknown
        ));
        assert_eq!(
            journaled_attempts(&[journaled("a", 1, t), journaled("a", 3, t)]),
            3
        );
    }
}
