//! One refresh of a session's tokens, run as its own task by
//! [`super::Login`] once the store gave it the session's turn.
//!
//! Its own task, because the provider's answer must be kept even if the
//! browser whose request found the session due goes away: a provider that
//! rotates refresh tokens has already spent the old one. Bounded by
//! [`REFRESH_BUDGET`], because the turn is held only so long (in Redis, a lock
//! with a TTL): past it another replica may refresh with the same token. The
//! answer is written only while the turn is still this refresh's
//! ([`SessionStore::update`]).

use super::session::{Session, SessionStore, StoreError, Tokens, Turn};
use portcullis_core::Identity;
use portcullis_identity::oidc::{RelyingParty, TokenSet};
use portcullis_identity::Authenticator;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// The longest a refresh may take, provider and store together: less than the
/// turn lasts ([`super::redis_store::LOCK_TTL`]). A provider slower than that
/// ends the session (the browser signs in again), as a failed refresh does.
pub const REFRESH_BUDGET: Duration = Duration::from_secs(8);

/// Everything one refresh needs, owned, so that it can outlive the request.
pub(super) struct Job {
    pub rp: Arc<RelyingParty>,
    pub store: Arc<dyn SessionStore>,
    pub auth: Arc<Authenticator>,
    pub provider: String,
    pub key: String,
    pub session: Arc<Session>,
    pub turn: Turn,
}

impl Job {
    /// The refreshed session, or `None` when the session ended (a refused
    /// refresh, or a logout meanwhile).
    pub(super) async fn run(self) -> Result<Option<Arc<Session>>, StoreError> {
        let Some(refresh_token) = self.session.tokens.refresh_token.clone() else {
            return Ok(Some(self.session));
        };
        let answer = tokio::time::timeout(REFRESH_BUDGET, self.ask(&refresh_token))
            .await
            .unwrap_or_else(|_| Err("the provider did not answer in time".to_string()));
        let (identity, set) = match answer {
            Ok(v) => v,
            Err(why) => {
                tracing::info!(reason = %why, "session refresh failed; the session ends");
                let _ = self.store.remove(&self.key).await;
                return Ok(None);
            }
        };
        let fresh = Arc::new(self.refreshed(identity, set));
        if self
            .store
            .update(&self.key, fresh.clone(), &self.turn)
            .await?
        {
            tracing::debug!("session refreshed");
            return Ok(Some(fresh));
        }
        drop(self.turn);
        // Logged out meanwhile, or the turn lapsed and another refresh wrote:
        // whatever the store holds now is the session.
        self.store.get(&self.key).await
    }

    /// The provider's answer and who it says the person is.
    async fn ask(&self, refresh_token: &str) -> Result<(Identity, TokenSet), String> {
        let set = self.rp.refresh(refresh_token).await?;
        let identity = match &set.id_token {
            Some(id_token) => {
                let id = self
                    .auth
                    .verify_id_token(&self.provider, id_token, self.rp.client_id(), None)
                    .await
                    .map_err(|e| e.description)?;
                // A refresh may update what is known of the person, never turn
                // the session into someone else's.
                if id.subject != self.session.identity.subject {
                    return Err("the refreshed ID token names another subject".to_string());
                }
                id
            }
            None => self.session.identity.clone(),
        };
        Ok((identity, set))
    }

    fn refreshed(&self, identity: Identity, set: TokenSet) -> Session {
        let old = &self.session;
        let now = super::now();
        Session {
            identity,
            sid: old.sid.clone(),
            csrf: old.csrf.clone(),
            created_at: old.created_at,
            expires_at: old.expires_at,
            tokens: Tokens {
                id_token: set.id_token.unwrap_or_else(|| old.tokens.id_token.clone()),
                // A provider may rotate the refresh token or keep the old one valid.
                refresh_token: set
                    .refresh_token
                    .or_else(|| old.tokens.refresh_token.clone()),
                access_expires_at: now + set.expires_in.as_secs(),
            },
            generation: old.generation + 1,
            last_seen: AtomicU64::new(now),
            refreshing: old.refreshing.clone(),
        }
    }
}
