//! A coarse timer for hyper's header-read timeout, one per server worker.
//!
//! Why it exists: hyper starts the header-read timer for every request head and drops it once the
//! head is parsed, so with tokio's timer each request registered an entry in the runtime's timer
//! wheel and removed it again (a boxed `Sleep`, two trips through the time driver). This table
//! took 1.6 % off the gateway's user-space instructions per proxied request (callgrind, see
//! docs/benchmarks.md). A head timeout of 30 s needs no millisecond precision, so here a pending
//! sleep is a slot in this worker's table, and a ticker task wakes the slots that are due once per
//! `tick`: a sleep fires between its deadline and one tick later. Registering and removing a slot
//! is a short uncontended lock on the worker's own table.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use hyper::rt::{Sleep, Timer};
use parking_lot::Mutex;
use slab::Slab;

#[derive(Debug)]
struct Slot {
    deadline: Instant,
    /// Taken (and woken) by the ticker once the deadline passed.
    waker: Option<Waker>,
    fired: bool,
}

/// A [`hyper::rt::Timer`] whose sleeps are woken by [`CoarseTimer::run`] every `tick`.
#[derive(Debug, Clone)]
pub struct CoarseTimer {
    slots: Arc<Mutex<Slab<Slot>>>,
    tick: Duration,
}

impl CoarseTimer {
    /// A timer whose sleeps fire at most `tick` late; [`run`](Self::run) must be polled (spawned
    /// on the worker's runtime) for any sleep to fire.
    pub fn new(tick: Duration) -> Self {
        Self {
            slots: Arc::new(Mutex::new(Slab::new())),
            tick: tick.max(Duration::from_millis(1)),
        }
    }

    /// Wakes the due sleeps every tick, forever (drop or abort the task to stop it).
    pub async fn run(self) {
        let mut every = tokio::time::interval(self.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.fire_due(Instant::now());
        }
    }

    /// Fires the sleeps whose deadline is at or before `now`.
    fn fire_due(&self, now: Instant) {
        let mut due = Vec::new();
        {
            let mut slots = self.slots.lock();
            for (_, s) in slots.iter_mut() {
                if !s.fired && s.deadline <= now {
                    s.fired = true;
                    due.extend(s.waker.take());
                }
            }
        }
        // Woken outside the lock: a woken task may poll (and lock) at once on this thread.
        for w in due {
            w.wake();
        }
    }

    /// Sleeps registered and not yet dropped.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.slots.lock().len()
    }
}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep {
            slots: self.slots.clone(),
            deadline,
            key: None,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(s) => s.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// One sleep of a [`CoarseTimer`]; holds a slot in the table from its first poll until dropped.
#[derive(Debug)]
struct CoarseSleep {
    slots: Arc<Mutex<Slab<Slot>>>,
    deadline: Instant,
    key: Option<usize>,
}

impl CoarseSleep {
    fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(k) = self.key
            && let Some(s) = self.slots.lock().get_mut(k)
        {
            s.deadline = deadline;
            s.fired = false;
        }
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut slots = this.slots.lock();
        match this.key.and_then(|k| slots.get_mut(k)) {
            Some(s) if s.fired => Poll::Ready(()),
            Some(s) => {
                match &mut s.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            None => {
                if this.deadline <= Instant::now() {
                    return Poll::Ready(());
                }
                this.key = Some(slots.insert(Slot {
                    deadline: this.deadline,
                    waker: Some(cx.waker().clone()),
                    fired: false,
                }));
                Poll::Pending
            }
        }
    }
}

impl Sleep for CoarseSleep {}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.slots.lock().try_remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `s` once with a waker that counts its wake-ups.
    fn poll_once(s: &mut Pin<Box<dyn Sleep>>, wakes: &Arc<WakeCount>) -> Poll<()> {
        let waker = Waker::from(wakes.clone());
        s.as_mut().poll(&mut Context::from_waker(&waker))
    }

    #[derive(Default)]
    struct WakeCount(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    impl WakeCount {
        fn get(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn a_sleep_fires_only_once_its_deadline_passed_and_a_reset_moves_it() {
        let t = CoarseTimer::new(Duration::from_millis(10));
        let wakes = Arc::new(WakeCount::default());
        let start = Instant::now();
        let mut s = t.sleep_until(start + Duration::from_secs(30));
        assert!(poll_once(&mut s, &wakes).is_pending());
        assert_eq!(t.pending(), 1);

        t.fire_due(start + Duration::from_secs(29));
        assert_eq!(wakes.get(), 0, "woken before its deadline");
        assert!(poll_once(&mut s, &wakes).is_pending());

        t.reset(&mut s, start + Duration::from_secs(60));
        t.fire_due(start + Duration::from_secs(31));
        assert_eq!(wakes.get(), 0, "the old deadline still fired after a reset");
        assert!(poll_once(&mut s, &wakes).is_pending());

        t.fire_due(start + Duration::from_secs(60));
        assert_eq!(wakes.get(), 1);
        assert!(poll_once(&mut s, &wakes).is_ready());

        // A reset after firing re-arms it (hyper reuses a sleep this way).
        t.reset(&mut s, start + Duration::from_secs(90));
        assert!(poll_once(&mut s, &wakes).is_pending());
        drop(s);
        assert_eq!(t.pending(), 0, "a dropped sleep left its slot behind");
    }

    #[test]
    fn a_deadline_already_past_is_ready_at_once_without_a_slot() {
        let t = CoarseTimer::new(Duration::from_millis(10));
        let wakes = Arc::new(WakeCount::default());
        let mut s = t.sleep(Duration::ZERO);
        assert!(poll_once(&mut s, &wakes).is_ready());
        assert_eq!(t.pending(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_ticker_wakes_a_waiting_task_within_a_tick_of_the_deadline() {
        let t = CoarseTimer::new(Duration::from_millis(20));
        let ticker = tokio::spawn(t.clone().run());
        let start = Instant::now();
        t.sleep(Duration::from_millis(100)).await;
        let took = start.elapsed();
        ticker.abort();
        assert!(took >= Duration::from_millis(100), "fired early: {took:?}");
        assert!(took < Duration::from_secs(2), "fired late: {took:?}");
    }
}
