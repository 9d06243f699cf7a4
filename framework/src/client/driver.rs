//! Waiting for a response. On transports a caller can poll (shared memory)
//! the waiting caller reads the link itself ("whoever waits, drives"), so a
//! response reaches it without a wake-up from another thread.
//!
//! One caller at a time leads: it polls the link and hands every frame it
//! finds to its caller. The others park on their one-shot; when the leader
//! has its own response it passes the lead to one of them. A leader that
//! sees nothing arrive for the spin budget steps down and the link's reader
//! task (woken by the peer through an eventfd) delivers instead. A leader
//! spins on its thread for a short slice, then yields, so the callers it
//! woke (and tasks about to send) get the thread too.

use std::fmt;
use std::time::{Duration, Instant};

use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{Notify, oneshot};

use crate::protocol::frame::Frame;
use crate::protocol::status::Status;
use crate::session::CallerSide;
use crate::transport::spin::Slices;

/// What a waiting caller receives.
pub(crate) type Response = Result<Frame, Status>;

/// A link a waiting caller can read itself.
pub(crate) trait ResponseDriver: Send + Sync + fmt::Debug {
    /// How long a leader polls with nothing arriving before it steps down
    /// (zero: callers never poll).
    fn spin_budget(&self) -> Duration;

    /// A response came `waited` after its request went: adapts the budget.
    fn found_after(&self, waited: Duration);

    /// Takes the lead if nobody has it.
    fn lead(&self) -> bool;

    /// Reads what has arrived, without waiting, handing every frame to
    /// `caller`; `true` if anything came. Only the leader calls it.
    fn poll(&self, caller: &dyn CallerSide) -> bool;

    /// The leader stops: with `hand_off`, passes the lead to a parked
    /// caller if there is one; otherwise the link's reader task takes over.
    fn step_down(&self, caller: &dyn CallerSide, hand_off: bool);

    /// Counts a caller parked (`true`) or no longer parked (`false`).
    fn parked(&self, parked: bool);

    /// How many callers are parked.
    fn parked_now(&self) -> usize;

    /// Where a parked caller is told to take the lead.
    fn baton(&self) -> &Notify;
}

/// How a wait ended.
#[derive(Debug)]
pub(crate) enum Waited {
    /// The response, or why the connection failed it.
    Response(Response),
    /// The connection dropped the call without a word.
    Dropped,
    /// The deadline passed first.
    Deadline,
}

/// Waits for the response of a call sent at `sent`, until `deadline`; on a
/// link with a `driver`, by reading it for `caller` while leading.
pub(crate) async fn wait_response(
    driver: Option<&dyn ResponseDriver>,
    caller: &dyn CallerSide,
    mut response: oneshot::Receiver<Response>,
    sent: Instant,
    deadline: Option<Instant>,
) -> Waited {
    let Some(driver) = driver.filter(|d| !d.spin_budget().is_zero()) else {
        return park(&mut response, deadline).await;
    };
    loop {
        if driver.lead()
            && let Some(done) = lead(driver, caller, &mut response, sent, deadline).await
        {
            return done;
        }
        let _parked = Parked::new(driver);
        let baton = driver.baton().notified();
        tokio::select! {
            biased;
            done = park(&mut response, deadline) => {
                if let Waited::Response(_) = done {
                    driver.found_after(sent.elapsed());
                }
                return done;
            }
            // Told to lead: try again.
            () = baton => {}
        }
    }
}

/// Waits on the one-shot alone.
async fn park(response: &mut oneshot::Receiver<Response>, deadline: Option<Instant>) -> Waited {
    let received = match deadline {
        None => response.await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), response).await {
            Ok(received) => received,
            Err(_) => return Waited::Deadline,
        },
    };
    received.map_or(Waited::Dropped, Waited::Response)
}

/// Leads until this caller's response is there (`Some`), or nothing has
/// arrived for the spin budget (`None`: park).
async fn lead(
    driver: &dyn ResponseDriver,
    caller: &dyn CallerSide,
    response: &mut oneshot::Receiver<Response>,
    sent: Instant,
    deadline: Option<Instant>,
) -> Option<Waited> {
    let mut leading = Leading {
        driver,
        caller,
        hand_off: true,
    };
    let budget = driver.spin_budget();
    let mut quiet_since = Instant::now();
    let mut slices = Slices::new(quiet_since);
    loop {
        match response.try_recv() {
            Ok(response) => {
                driver.found_after(sent.elapsed());
                return Some(Waited::Response(response));
            }
            Err(TryRecvError::Closed) => return Some(Waited::Dropped),
            Err(TryRecvError::Empty) => {}
        }
        if driver.poll(caller) {
            quiet_since = Instant::now();
            if driver.parked_now() > 0 {
                // Callers just got their responses: let them run.
                tokio::task::yield_now().await;
                slices.restart(Instant::now());
            }
            continue;
        }
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            return Some(Waited::Deadline);
        }
        if now.duration_since(quiet_since) >= budget {
            leading.hand_off = false;
            return None;
        }
        slices.tick(now).await;
    }
}

/// Steps down however the lead ends (a dropped future included).
struct Leading<'a> {
    driver: &'a dyn ResponseDriver,
    caller: &'a dyn CallerSide,
    hand_off: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.driver.step_down(self.caller, self.hand_off);
    }
}

/// Counts a parked caller while it lives.
struct Parked<'a>(&'a dyn ResponseDriver);

impl<'a> Parked<'a> {
    fn new(driver: &'a dyn ResponseDriver) -> Self {
        driver.parked(true);
        Self(driver)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked(false);
    }
}
