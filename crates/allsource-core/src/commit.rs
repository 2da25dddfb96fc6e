//! Waiting for the commit: a one-shot completion that a caller can block on or await.
//!
//! The group-commit writer completes every ticket whose target position it has made
//! durable and visible, or fails them all when the log fails. A ticket works both for
//! the blocking library API ([`Ticket::wait`]) and for async callers (it is a
//! [`Future`]), without the engine depending on an async runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use allsource_core_types::{Error, Position};
use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct State {
    result: Option<Result<(), Error>>,
    waker: Option<Waker>,
}

/// The shared half of a ticket, held by the committer until it completes it.
#[derive(Default)]
pub(crate) struct Completion {
    state: Mutex<State>,
    done: Condvar,
}

impl Completion {
    pub(crate) fn complete(&self, result: Result<(), Error>) {
        let waker = {
            let mut state = self.state.lock();
            if state.result.is_some() {
                return;
            }
            state.result = Some(result);
            state.waker.take()
        };
        self.done.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A wait for the commit of everything up to a position.
pub struct Ticket(TicketState);

enum TicketState {
    /// Known at once (an inline commit, or a failure): no allocation, no lock.
    Ready(Option<Result<(), Error>>),
    /// Completed later by the commit writer.
    Waiting(Arc<Completion>),
}

impl Ticket {
    pub(crate) fn new(completion: Arc<Completion>) -> Ticket {
        Ticket(TicketState::Waiting(completion))
    }

    /// A ticket that is already complete.
    pub(crate) fn ready(result: Result<(), Error>) -> Ticket {
        Ticket(TicketState::Ready(Some(result)))
    }

    /// Blocks until the commit is done (or failed).
    pub fn wait(self) -> Result<(), Error> {
        let completion = match self.0 {
            TicketState::Ready(result) => return result.unwrap_or(Ok(())),
            TicketState::Waiting(completion) => completion,
        };
        let mut state = completion.state.lock();
        loop {
            if let Some(result) = state.result.take() {
                return result;
            }
            completion.done.wait(&mut state);
        }
    }
}

impl Future for Ticket {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            TicketState::Ready(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            TicketState::Waiting(completion) => {
                let mut state = completion.state.lock();
                match state.result.take() {
                    Some(result) => Poll::Ready(result),
                    None => {
                        state.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

/// Tickets waiting for positions to become committed.
#[derive(Default)]
pub(crate) struct Waiters {
    waiting: Mutex<Vec<(Position, Arc<Completion>)>>,
}

impl Waiters {
    /// A ticket for `target`; `committed` and `failure` are read under the waiters' lock,
    /// so a commit that happens concurrently is never missed.
    pub(crate) fn ticket(
        &self,
        target: Position,
        committed: impl Fn() -> Position,
        failure: impl Fn() -> Option<Error>,
    ) -> Ticket {
        let mut waiting = self.waiting.lock();
        if committed() >= target {
            return Ticket::ready(Ok(()));
        }
        if let Some(error) = failure() {
            return Ticket::ready(Err(error));
        }
        let completion = Arc::new(Completion::default());
        waiting.push((target, completion.clone()));
        Ticket::new(completion)
    }

    /// Completes every ticket whose target is at or below `committed`.
    pub(crate) fn committed(&self, committed: Position) {
        let ready: Vec<Arc<Completion>> = {
            let mut waiting = self.waiting.lock();
            let mut ready = Vec::new();
            waiting.retain(|(target, completion)| {
                let done = *target <= committed;
                if done {
                    ready.push(completion.clone());
                }
                !done
            });
            ready
        };
        for completion in ready {
            completion.complete(Ok(()));
        }
    }

    /// Fails every waiting ticket.
    pub(crate) fn fail(&self, error: &Error) {
        let all = std::mem::take(&mut *self.waiting.lock());
        for (_, completion) in all {
            completion.complete(Err(error.clone()));
        }
    }
}
