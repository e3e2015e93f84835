//! The development issuer's token introspection endpoint (RFC 7662,
//! `POST /introspect`): each opaque token a test registers answers with the
//! document it was given, any other token `{"active": false}`.
//!
//! Test controls: an answer delay (to make calls overlap), and what was seen:
//! the calls open at once (now and at most) and the last `Authorization`.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::lock;
use crate::token_endpoint::parse_form;

/// The introspection endpoint's state, shared by every connection.
#[derive(Default)]
pub struct IntrospectionEndpoint {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// token → the document it is introspected as.
    answers: HashMap<String, Value>,
    delay: Duration,
    open: usize,
    most_open: usize,
    /// The last call's `Authorization` (a client secret: this is a test double).
    last_authorization: Option<String>,
}

impl IntrospectionEndpoint {
    /// `token` is introspected as `answer` from now on (`{"active": true, …}`).
    pub fn answer_for(&self, token: &str, answer: Value) {
        lock(&self.state).answers.insert(token.to_string(), answer);
    }

    /// Every call waits `delay` before it is answered.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// The most calls that were open at once.
    pub fn most_open(&self) -> usize {
        lock(&self.state).most_open
    }

    /// The `Authorization` header of the last call.
    pub fn last_authorization(&self) -> Option<String> {
        lock(&self.state).last_authorization.clone()
    }

    /// Answers one call: the form's `token`, as registered.
    pub(crate) async fn answer(&self, authorization: Option<String>, form: &[u8]) -> Value {
        let delay = {
            let mut s = lock(&self.state);
            s.open += 1;
            s.most_open = s.most_open.max(s.open);
            s.delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut s = lock(&self.state);
        s.open -= 1;
        s.last_authorization = authorization;
        let token = parse_form(form).remove("token").unwrap_or_default();
        s.answers
            .get(&token)
            .cloned()
            .unwrap_or(json!({"active": false}))
    }
}
