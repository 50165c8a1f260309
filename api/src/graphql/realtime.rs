//! Shared subscription executions and the bounds around them.
//!
//! Subscriptions with the same document, variables, role and subject run as one
//! *group*: one async-graphql execution whose every result is serialized once and
//! fanned out to all members (each gets the same payload under its own id). For
//! tables that are all SHARED the subject does not matter, so callers of one role share
//! regardless of who they are. A live query's latest result is kept so that a member
//! who joins later starts from it. A change feed that asks for a starting point
//! (`since_seq` or `initial_batch_size`) runs alone, since its first events are its own.
//!
//! Also here: the per-user subscription count and the shutdown signal that closes every
//! WebSocket with a proper close frame.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::Variables;
use async_graphql::dynamic::Schema;
use async_graphql::parser::types::ExecutableDocument;
use futures::StreamExt;
use kalamdb_auth::identity::{Role, UserId};
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::error::EngineError;
use kalamdb_engine::error::ErrorCode;
use kalamdb_schema_gen::resolvers::subscription::{
    SubscriptionItem, SubscriptionLabel, SubscriptionMode, SubscriptionSource,
};
use parking_lot::Mutex;
use serde_json::Value as Json;
use tokio::sync::{Notify, mpsc, watch};

use super::outbox::{ConnEvent, Outbox, Protocol, frame};
use super::response::{error_json, response_errors, response_json};

/// One subscriber of a group: where its frames go and under which id.
pub struct Member {
    pub out: Outbox,
    pub protocol: Protocol,
    /// The client's operation id, JSON-encoded.
    pub id_json: Arc<str>,
    pub id: String,
    pub token: u64,
    pub events: mpsc::UnboundedSender<ConnEvent>,
}

impl Member {
    fn send(&self, ty: &'static str, payload: Option<&str>) {
        self.out.text(frame(&self.id_json, ty, payload));
    }

    pub fn next(&self, payload: &str) {
        self.send(self.protocol.next_type(), Some(payload));
    }

    pub fn error(&self, errors: &str) {
        self.send("error", Some(errors));
    }

    pub fn complete(&self) {
        self.send("complete", None);
    }
}

struct Group {
    key: Arc<GroupKey>,
    replay_last: bool,
    members: Mutex<Members>,
    last: Mutex<Option<Arc<str>>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

/// A group's members; most groups have one, so a vector is the compact choice. A
/// broadcast wants the members of one connection next to each other, so it sorts them
/// by connection when a join may have broken that.
#[derive(Default)]
struct Members {
    list: Vec<Member>,
    by_conn: bool,
}

impl Group {
    /// Adds a member; a live query's member starts from the latest result.
    fn join(&self, member: Member) {
        let last = self.last.lock().clone();
        if let Some(last) = last {
            member.next(&last);
        }
        let mut m = self.members.lock();
        m.by_conn &= m.list.last().is_none_or(|l| l.out.conn_id() == member.out.conn_id());
        m.list.push(member);
    }

    fn each(&self, f: impl Fn(&Member)) {
        self.members.lock().list.iter().for_each(f);
    }

    /// Sends a result to every member. Each connection gets one message with the
    /// payload and its members' ids; its writer builds the frames and writes them with
    /// one flush, so the fan-out itself only queues one message per connection.
    fn broadcast(&self, payload: &Arc<str>) {
        let mut m = self.members.lock();
        if !m.by_conn {
            // stable: members of a connection keep their order
            m.list.sort_by_key(|x| x.out.conn_id());
            m.by_conn = true;
        }
        for run in m.list.chunk_by(|a, b| a.out.conn_id() == b.out.conn_id()) {
            let ids = run.iter().map(|x| x.id_json.clone()).collect();
            run[0].out.next_all(run[0].protocol.next_type(), ids, payload.clone());
        }
    }
}

/// What a subscription runs: its document's text (shared with the document cache and
/// every other subscription of that text), its variables and its operation.
#[derive(PartialEq, Eq, Hash)]
pub struct SubRequest {
    pub query: Arc<str>,
    /// The variables as JSON text: a parsed map costs hundreds of bytes per
    /// subscription, and they are needed only when a result is rendered.
    pub variables: Box<str>,
    pub operation_name: Option<Box<str>>,
}

/// Which subscriptions run as one group.
#[derive(PartialEq, Eq, Hash)]
struct GroupKey {
    /// 0 for a group others may join; the subscriber's token for one that runs alone.
    solo: u64,
    role: Role,
    /// The caller; `None` when every table is SHARED, so that callers of one role share.
    subject: Option<UserId>,
    request: Arc<SubRequest>,
}

/// Whether a subscription may share its execution.
pub enum Sharing {
    /// It runs alone: its first events are its own.
    Alone,
    /// It shares with identical subscriptions of the same role and `subject` (`None`:
    /// of any caller); with `replay_last` a late joiner starts from the last result.
    Shared { subject: Option<UserId>, replay_last: bool },
}

#[derive(Default)]
struct Inner {
    groups: HashMap<Arc<GroupKey>, Arc<Group>>,
    per_user: HashMap<UserId, usize>,
}

pub struct Realtime {
    inner: Mutex<Inner>,
    max_per_user: usize,
    next_token: AtomicU64,
    shutdown: watch::Sender<bool>,
    open: AtomicUsize,
    all_closed: Notify,
}

/// A subscriber's place in a group; leaving is dropping it.
pub struct Membership {
    realtime: Arc<Realtime>,
    group: Arc<Group>,
    token: u64,
    user: UserId,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.realtime.leave(&self.group, self.token, &self.user);
    }
}

/// Counts an open WebSocket while it lives.
pub struct OpenSocket(Arc<Realtime>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

impl Realtime {
    pub fn new(max_per_user: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_per_user,
            next_token: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
        }
    }

    pub fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    pub fn track(self: &Arc<Self>) -> OpenSocket {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenSocket(self.clone())
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every WebSocket to close and waits (bounded) until they have.
    pub async fn shut_down(&self, within: Duration) {
        self.shutdown.send_replace(true);
        let wait = async {
            loop {
                let notified = self.all_closed.notified();
                if self.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
    }

    /// Starts a subscription, or joins the running group of identical ones. A new
    /// execution opens its engine source here, on the connection's task, so that the
    /// subscription is registered before the connection reads its next message. On
    /// refusal the member has been sent the `error` message, and `None` comes back.
    pub async fn subscribe(
        self: &Arc<Self>,
        sharing: Sharing,
        prepared: Prepared,
        member: Member,
    ) -> Option<Membership> {
        let user = prepared.ctx.user.clone();
        let token = member.token;
        let (solo, subject, replay_last) = match sharing {
            Sharing::Alone => (token, None, false),
            Sharing::Shared { subject, replay_last } => (0, subject, replay_last),
        };
        let key = Arc::new(GroupKey {
            solo,
            role: prepared.ctx.role,
            subject,
            request: prepared.request.clone(),
        });
        let membership = |group: Arc<Group>| Membership {
            realtime: self.clone(),
            group,
            token,
            user: user.clone(),
        };
        {
            let mut inner = self.inner.lock();
            let count = inner.per_user.entry(user.clone()).or_default();
            if *count >= self.max_per_user {
                let message = format!("at most {} subscriptions per user", self.max_per_user);
                member.error(&Json::Array(vec![error_json(message, ErrorCode::TooManySubscriptions)]).to_string());
                return None;
            }
            *count += 1;
            if let Some(g) = inner.groups.get(&key).cloned() {
                g.join(member);
                return Some(membership(g));
            }
        }
        let source = match setup(&prepared).await {
            Ok(s) => s,
            Err(errors) => {
                member.error(&errors);
                self.release_user(&user);
                return None;
            }
        };
        let mut inner = self.inner.lock();
        // the same execution may have been started meanwhile: join it
        if let Some(g) = inner.groups.get(&key).cloned() {
            g.join(member);
            drop(inner);
            drop(source);
            return Some(membership(g));
        }
        let group = Arc::new(Group {
            key,
            replay_last,
            members: Mutex::new(Members {
                list: vec![member],
                by_conn: true,
            }),
            last: Mutex::new(None),
            task: Mutex::new(None),
        });
        inner.groups.insert(group.key.clone(), group.clone());
        drop(inner);
        let task = tokio::spawn(run_group(Box::new(GroupRun {
            rt: self.clone(),
            group: group.clone(),
            prepared,
            source,
        })));
        *group.task.lock() = Some(task.abort_handle());
        Some(membership(group))
    }

    fn release_user(&self, user: &UserId) {
        let mut inner = self.inner.lock();
        if let Some(c) = inner.per_user.get_mut(user) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                inner.per_user.remove(user);
            }
        }
    }

    fn leave(&self, group: &Arc<Group>, token: u64, user: &UserId) {
        self.release_user(user);
        let inner = self.inner.lock();
        let empty = {
            let mut m = group.members.lock();
            // removal keeps the order, and so the grouping by connection
            m.list.retain(|x| x.token != token);
            m.list.is_empty()
        };
        if empty {
            let mut inner = inner;
            if inner.groups.get(&group.key).is_some_and(|g| Arc::ptr_eq(g, group)) {
                inner.groups.remove(&group.key);
            }
            if let Some(t) = group.task.lock().take() {
                t.abort();
            }
        }
    }

    fn finished(&self, group: &Arc<Group>) {
        let mut inner = self.inner.lock();
        if inner.groups.get(&group.key).is_some_and(|g| Arc::ptr_eq(g, group)) {
            inner.groups.remove(&group.key);
        }
    }
}

/// Opens the subscription's engine source through async-graphql (validation,
/// arguments, authorization); the errors as a JSON array when it cannot start.
async fn setup(p: &Prepared) -> Result<Box<SubscriptionSource>, String> {
    let mode = Arc::new(SubscriptionMode::Setup(Mutex::new(None)));
    let mut stream = p.schema.execute_stream(p.request(mode.clone(), true));
    let mut errors = Vec::new();
    while let Some(resp) = stream.next().await {
        errors.extend(resp.errors);
    }
    drop(stream);
    let source = match &*mode {
        SubscriptionMode::Setup(slot) => slot.lock().take(),
        SubscriptionMode::Render(_) => None,
    };
    match source {
        Some(s) if errors.is_empty() => Ok(s),
        _ if errors.is_empty() => {
            Err(Json::Array(vec![error_json("internal error".into(), ErrorCode::Internal)]).to_string())
        }
        _ => Err(response_errors(errors)),
    }
}

/// What a group's task owns.
struct GroupRun {
    rt: Arc<Realtime>,
    group: Arc<Group>,
    prepared: Prepared,
    source: Box<SubscriptionSource>,
}

/// Reads the source and renders each item once, with a one-shot execution of the
/// document, for every member. An error is sent as the last result.
///
/// This task lives as long as the group, so its own state stays a few words: it
/// owns one box, waits in the source's `ready`, and the engine read and the rendering
/// run as boxed futures that exist only while there is an item to produce.
async fn run_group(mut run: Box<GroupRun>) {
    let GroupRun {
        group,
        prepared,
        source,
        ..
    } = &mut *run;
    // the payload sent last: a result rendered the same (a live aggregate that a
    // change left as it was) is not sent again
    let mut sent: Option<Arc<str>> = None;
    loop {
        source.ready().await;
        let item = match Box::pin(source.take()).await {
            Ok(None) => continue,
            Ok(Some(item)) => Ok(item),
            Err(e) => Err(e),
        };
        let last = item.is_err();
        // rendered on the live-query threads: a costly evaluation delays only itself
        let render = prepared.clone();
        let rendered = Box::pin(
            prepared
                .engine
                .on_live_threads(async move { render.render(item).await }),
        )
        .await;
        let resp = match rendered {
            Ok(Some(resp)) => resp,
            Ok(None) => break,
            Err(e) => async_graphql::Response::from_errors(vec![
                kalamdb_schema_gen::errors::engine_error(e).into_server_error(async_graphql::Pos::default()),
            ]),
        };
        let failed = !resp.errors.is_empty();
        let payload: Arc<str> = response_json(resp).into();
        if sent.as_deref() == Some(&*payload) && !failed {
            continue;
        }
        sent = Some(payload.clone());
        if group.replay_last {
            *group.last.lock() = Some(payload.clone());
        }
        group.broadcast(&payload);
        if last || failed {
            break;
        }
    }
    let GroupRun { rt, group, source, .. } = *run;
    drop(source);
    rt.finished(&group);
    group.each(|m| {
        m.complete();
        let _ = m.events.send(ConnEvent::Finished(m.id.clone(), m.token));
    });
}

/// A subscription request, kept to run its document again for each result.
#[derive(Clone)]
pub struct Prepared {
    /// Live aggregates render on the engine's live-query threads.
    pub engine: Arc<Engine>,
    pub schema: Schema,
    pub ctx: ExecContext,
    /// The request's document, parsed once (and shared with the document cache).
    pub doc: Arc<ExecutableDocument>,
    pub request: Arc<SubRequest>,
}

impl Prepared {
    fn request(&self, mode: Arc<SubscriptionMode>, with_label: bool) -> async_graphql::Request {
        let req = &*self.request;
        let variables = serde_json::from_str(&req.variables).unwrap_or(Json::Null);
        let mut r = async_graphql::Request::new(req.query.to_string())
            .variables(Variables::from_json(variables))
            .data(self.ctx.clone())
            .data(mode);
        if with_label {
            r = r.data(SubscriptionLabel(req.query.clone()));
        }
        if let Some(op) = &req.operation_name {
            r = r.operation_name(op.to_string());
        }
        r.set_parsed_query((*self.doc).clone());
        r
    }

    /// One item rendered through the document's selection.
    async fn render(&self, item: Result<SubscriptionItem, EngineError>) -> Option<async_graphql::Response> {
        let mode = Arc::new(SubscriptionMode::Render(Mutex::new(Some(item))));
        self.schema.execute_stream(self.request(mode, false)).next().await
    }
}
