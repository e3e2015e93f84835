//! Client connections as a whole: how many are open (the `server.max_connections`
//! limit and the `portcullis_connections{state}` gauge), which of them have a
//! request in flight (the `server.idle_timeout` watchdog), and waiting for them all
//! to end (the shutdown drain).
//!
//! A request is in flight from the moment hyper hands its head to the service
//! until its response body is dropped (written out, or abandoned with the
//! connection). So a slow upstream or a long download keeps its connection
//! active, and only a connection with nothing in flight can be idle: for HTTP/1
//! the wait between keep-alive requests, for HTTP/2 a connection without open
//! streams.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Every client connection of the process (all workers share one).
pub struct Connections {
    open: AtomicUsize,
    active: Gauge,
    idle: Gauge,
    refused: Counter,
    /// Woken whenever the last open connection ends.
    none_open: Notify,
}

impl Connections {
    /// `active`, `idle` and `refused` are the registered metric handles.
    pub fn new(active: Gauge, idle: Gauge, refused: Counter) -> Self {
        Connections {
            open: AtomicUsize::new(0),
            active,
            idle,
            refused,
            none_open: Notify::new(),
        }
    }

    /// Counts a newly accepted connection in, or refuses it (and counts the
    /// refusal) when `max` are already open. The connection stays counted until the
    /// returned handle and every request it started are gone.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<Arc<Activity>> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.release();
            self.refused.inc();
            return None;
        }
        self.idle.inc();
        Some(Arc::new(Activity {
            connections: self.clone(),
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
            became_idle: Notify::new(),
            hibernate: AtomicBool::new(false),
        }))
    }

    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.none_open.notified();
            tokio::pin!(notified);
            // Registered before the check, so a connection ending in between still
            // wakes this waiter.
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn release(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none_open.notify_waiters();
        }
    }
}

struct State {
    in_flight: u32,
    /// When `in_flight` last became zero (or the connection opened).
    idle_since: Instant,
}

/// One connection's requests in flight.
pub struct Activity {
    connections: Arc<Connections>,
    state: Mutex<State>,
    became_idle: Notify,
    /// Set by the connection's watchdog once it has been idle a while; cleared by
    /// the next request. See `listener::hibernate`.
    hibernate: AtomicBool,
}

impl Activity {
    /// Marks a request as in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.hibernate.store(false, Ordering::Relaxed);
        if let Ok(mut state) = self.state.lock() {
            state.in_flight += 1;
            if state.in_flight == 1 {
                self.connections.idle.dec();
                self.connections.active.inc();
            }
        }
        InFlight(self.clone())
    }

    fn finish(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
                self.connections.active.dec();
                self.connections.idle.inc();
                // A stored permit if the watchdog is not waiting yet: no lost wake-up.
                self.became_idle.notify_one();
            }
        }
    }

    /// Resolves once the connection has had nothing in flight for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        self.idle_period_for(timeout, None).await;
    }

    /// Like [`Activity::idle_for`], but skipping the idle period that began at
    /// `skip` (one already acted on). Returns when the period it fired for began.
    pub async fn idle_period_for(&self, timeout: Duration, skip: Option<Instant>) -> Instant {
        loop {
            let period = self
                .state
                .lock()
                .ok()
                .and_then(|s| (s.in_flight == 0).then_some(s.idle_since))
                .filter(|since| Some(*since) != skip);
            match period {
                Some(since) if since + timeout <= Instant::now() => return since,
                // A request may start and end while this sleeps: the deadline is
                // read again afterwards, counting from the latest idle moment.
                Some(since) => tokio::time::sleep_until(since + timeout).await,
                None => self.became_idle.notified().await,
            }
        }
    }

    /// Asks the connection to hibernate at its next chance (see
    /// `listener::hibernate`); a request starting first cancels it.
    pub fn request_hibernation(&self) {
        self.hibernate.store(true, Ordering::Relaxed);
    }

    /// Hibernation was asked for and nothing is in flight.
    pub fn hibernation_due(&self) -> bool {
        self.hibernate.load(Ordering::Relaxed)
            && self.state.lock().map(|s| s.in_flight == 0).unwrap_or(false)
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        // The last reference: the connection and all its requests are gone, and
        // with its requests gone it was idle.
        self.connections.idle.dec();
        self.connections.release();
    }
}

/// A request in flight on its connection (see [`Activity::start`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections() -> Arc<Connections> {
        Arc::new(Connections::new(
            Gauge::default(),
            Gauge::default(),
            Counter::default(),
        ))
    }

    #[test]
    fn admits_up_to_the_limit_and_counts_refusals() {
        let c = connections();
        let a = c.admit(2).unwrap();
        let b = c.admit(2).unwrap();
        assert!(c.admit(2).is_none());
        assert_eq!(c.refused.get(), 1);
        assert_eq!(c.open(), 2);
        drop(a);
        assert_eq!(c.open(), 1);
        let _again = c.admit(2).unwrap();
        drop(b);
        assert_eq!(c.open(), 1);
    }

    #[test]
    fn gauges_follow_requests_in_flight() {
        let c = connections();
        let a = c.admit(10).unwrap();
        assert_eq!((c.active.get(), c.idle.get()), (0, 1));
        let r1 = a.start();
        let r2 = a.start();
        assert_eq!((c.active.get(), c.idle.get()), (1, 0));
        drop(r1);
        assert_eq!((c.active.get(), c.idle.get()), (1, 0));
        // The connection ends first; its last request still holds it open.
        drop(a);
        assert_eq!(c.open(), 1);
        drop(r2);
        assert_eq!((c.active.get(), c.idle.get(), c.open()), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_only_counts_time_with_nothing_in_flight() {
        let c = connections();
        let a = c.admit(10).unwrap();
        let started = Instant::now();
        let request = a.start();
        let watch = {
            let a = a.clone();
            tokio::spawn(async move { a.idle_for(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!watch.is_finished(), "cut while a request was in flight");
        drop(request);
        watch.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn an_acted_on_idle_period_is_skipped_until_the_next_one() {
        let c = connections();
        let a = c.admit(10).unwrap();
        let first = a.idle_period_for(Duration::from_secs(1), None).await;
        let next = {
            let a = a.clone();
            tokio::spawn(
                async move { a.idle_period_for(Duration::from_secs(1), Some(first)).await },
            )
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!next.is_finished(), "fired twice for one idle period");
        drop(a.start());
        let second = next.await.unwrap();
        assert!(second > first);
    }

    #[test]
    fn a_request_cancels_hibernation() {
        let c = connections();
        let a = c.admit(10).unwrap();
        a.request_hibernation();
        assert!(a.hibernation_due());
        let request = a.start();
        assert!(!a.hibernation_due());
        a.request_hibernation();
        assert!(!a.hibernation_due(), "due with a request in flight");
        drop(request);
        assert!(a.hibernation_due());
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_connection() {
        let c = connections();
        let a = c.admit(10).unwrap();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.drained().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
