//! The subscription root, and the one API between it and the transport.
//!
//! The transport (`api`'s shared subscription executions) runs a subscription through
//! async-graphql in two modes, chosen by the [`SubscriptionMode`] in the request data:
//! - **Setup**, once: async-graphql validates the document and the root field's
//!   resolver binds its arguments, authorizes, and opens its engine source (a
//!   [`SubscriptionSource`]: a live query's results or a change feed), which it leaves
//!   in the mode's slot instead of yielding anything. The transport takes it from there.
//! - **Render**, once per item: the transport waits on the source
//!   ([`SubscriptionSource::ready`], then [`SubscriptionSource::take`]), puts the item
//!   in the mode's slot and runs the same document again; the resolver turns the item
//!   into the field's value and async-graphql applies the selection as for any query.
//!
//! So an idle subscription holds its source and its request, not a suspended execution.
//! A [`SubscriptionLabel`] in the request data names it in `system.live_queries`.

use std::sync::Arc;

use async_graphql::Value as Gql;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, ResolverContext, SubscriptionField, SubscriptionFieldFuture, TypeRef,
};
use kalamdb_engine::catalog::schema::TableDef;
use kalamdb_engine::error::{EngineError, ErrorCode};
use kalamdb_engine::live::results::{LiveResults, LiveWatch};
use kalamdb_engine::live::{ChangeFeed, FeedBatch, FeedStart};
use kalamdb_engine::read::select::Rows;
use kalamdb_engine::types::{ColumnType, Value};
use kalamdb_storage::seq::Seq;

use super::{Env, GqlResult, OrGql, RowObj, arg, checked_rows, env, filter_arg, int_arg, list_request, list_value};
use crate::errors::gql_error;
use crate::meta::TableMeta;
use crate::spec::{Arg, RootField};
use crate::values::from_gql;

/// What `system.live_queries` shows as a subscription's query; the transport sets it
/// to the document's text.
#[derive(Debug, Clone)]
pub struct SubscriptionLabel(pub Arc<str>);

fn label(ctx: &ResolverContext<'_>, field: &str) -> Arc<str> {
    ctx.data_opt::<SubscriptionLabel>()
        .map_or_else(|| field.into(), |l| l.0.clone())
}

/// `subscription { <t>(where, order_by, limit, offset) }`: the result now, and again
/// each time it changes.
/// The engine side of one subscription, opened once by its root field and then read
/// by the transport, which renders each item with a one-shot execution of the same
/// document. So an idle subscription holds only this, not a suspended execution.
pub enum SubscriptionSource {
    Changes(ChangeFeed),
    Live(Box<LiveResults>),
    /// A live aggregate: evaluated again, when its rows may have changed, by the render.
    Watch(LiveWatch),
}

/// One thing a subscription yields.
pub enum SubscriptionItem {
    Changes(Arc<TableDef>, FeedBatch),
    Live(Rows),
    /// The rows of a live aggregate may have changed.
    Changed,
}

impl SubscriptionSource {
    /// Waits until [`take`](Self::take) may have an item. An idle subscription waits
    /// here, in a future of a few words.
    pub async fn ready(&self) {
        match self {
            SubscriptionSource::Changes(feed) => feed.ready().await,
            SubscriptionSource::Live(results) => results.ready().await,
            SubscriptionSource::Watch(watch) => watch.ready().await,
        }
    }

    /// The next item, or `None` when there is nothing to send; an error ends the
    /// subscription (it is rendered as its last result).
    pub async fn take(&mut self) -> Result<Option<SubscriptionItem>, EngineError> {
        Ok(match self {
            SubscriptionSource::Changes(feed) => feed
                .take()
                .await?
                .map(|batch| SubscriptionItem::Changes(feed.table.clone(), batch)),
            SubscriptionSource::Live(results) => results.take().await?.map(SubscriptionItem::Live),
            SubscriptionSource::Watch(watch) => watch.take()?.then_some(SubscriptionItem::Changed),
        })
    }
}

/// How the transport drives a subscription field through async-graphql (request data):
/// `Setup` opens the source and hands it out; `Render` turns one item into the
/// field's value, with the document's selection applied by async-graphql as usual.
pub enum SubscriptionMode {
    Setup(parking_lot::Mutex<Option<Box<SubscriptionSource>>>),
    Render(parking_lot::Mutex<Option<Result<SubscriptionItem, EngineError>>>),
}

type FieldStream<'a> = futures::stream::BoxStream<'a, GqlResult<FieldValue<'a>>>;

/// The common part of the subscription fields: render a given item, or open the
/// source with `open` and hand it to the transport. `changed` is the value a live
/// aggregate renders (its fields evaluate it).
fn drive_subscription<'a>(
    ctx: &ResolverContext<'_>,
    env: &Env<'_>,
    open: impl FnOnce() -> GqlResult<SubscriptionSource>,
    changed: Option<FieldValue<'a>>,
) -> GqlResult<FieldStream<'a>> {
    use futures::StreamExt;
    let mode = ctx.data_opt::<Arc<SubscriptionMode>>().ok_or_else(|| {
        gql_error(
            ErrorCode::BadRequest,
            "subscriptions run over a WebSocket on /v1/graphql",
        )
    })?;
    match &**mode {
        SubscriptionMode::Setup(slot) => {
            *slot.lock() = Some(Box::new(open()?));
            Ok(futures::stream::empty().boxed())
        }
        SubscriptionMode::Render(slot) => {
            let item = slot
                .lock()
                .take()
                .ok_or_else(|| gql_error(ErrorCode::Internal, "internal error"))?;
            let value = match item.gql()? {
                SubscriptionItem::Changes(table, batch) => Ok(FieldValue::list(
                    change_objs(&table, batch).into_iter().map(FieldValue::owned_any),
                )),
                SubscriptionItem::Live(rows) => checked_rows(env.limits, rows).map(list_value),
                SubscriptionItem::Changed => changed.ok_or_else(|| gql_error(ErrorCode::Internal, "internal error")),
            };
            Ok(futures::stream::once(async move { value }).boxed())
        }
    }
}

/// `subscription { <t>(where, order_by, limit, offset) }`: the result now, and again
/// each time it changes.
pub fn live_subscription_field(meta: &Arc<TableMeta>) -> SubscriptionField {
    let m = meta.clone();
    let field = SubscriptionField::new(
        &meta.names.base,
        TypeRef::named_nn_list_nn(&meta.names.base),
        move |ctx| {
            let meta = m.clone();
            SubscriptionFieldFuture::new(async move {
                let env = env(&ctx)?;
                drive_subscription(
                    &ctx,
                    &env,
                    || {
                        let req = list_request(&ctx, &env, &meta)?;
                        let label = label(&ctx, &meta.names.base);
                        let results = env.engine.subscribe_live(env.exec, &meta.id, req, label).gql()?;
                        Ok(SubscriptionSource::Live(Box::new(results)))
                    },
                    None,
                )
            })
        },
    )
    .description(format!(
        "Rows of {}: the result at once, then again each time it changes.",
        meta.id
    ));
    RootField::List
        .inputs(meta)
        .into_iter()
        .fold(field, SubscriptionField::argument)
}

/// `subscription { <t>_aggregate(where, group_by) { ... } }`: the aggregates now, and
/// again each time a change to the rows they cover changes them.
pub fn aggregate_subscription_field(meta: &Arc<TableMeta>) -> SubscriptionField {
    let m = meta.clone();
    let field = SubscriptionField::new(
        RootField::Aggregate.name(&meta.names),
        TypeRef::named_nn(meta.names.aggregate()),
        move |ctx| {
            let meta = m.clone();
            SubscriptionFieldFuture::new(async move {
                let env = env(&ctx)?;
                let parent = super::aggregate::aggregate_parent(&ctx, &env, &meta)?;
                let filter = parent.filter.clone();
                drive_subscription(
                    &ctx,
                    &env,
                    || {
                        let label = label(&ctx, &RootField::Aggregate.name(&meta.names));
                        let watch = env
                            .engine
                            .subscribe_watch(env.exec, &meta.id, filter.as_ref(), label)
                            .gql()?;
                        Ok(SubscriptionSource::Watch(watch))
                    },
                    Some(FieldValue::owned_any(parent)),
                )
            })
        },
    )
    .description(format!(
        "Aggregates over rows of {}: at once, then again each time they change.",
        meta.id
    ));
    RootField::Aggregate
        .inputs(meta)
        .into_iter()
        .fold(field, SubscriptionField::argument)
}

/// One change event handed to the fields of a `<t>_change` object.
pub struct ChangeObj {
    op: &'static str,
    seq: Seq,
    row: Option<RowObj>,
    old_row: Option<RowObj>,
    reset: bool,
}

fn change_objs(table: &Arc<TableDef>, batch: FeedBatch) -> Vec<ChangeObj> {
    let row = |seq: Seq, values: Vec<Value>| RowObj {
        table: table.clone(),
        seq,
        values,
        deleted: false,
    };
    match batch {
        FeedBatch::Snapshot { rows, watermark, reset } => rows
            .into_iter()
            .map(|(seq, values)| ChangeObj {
                op: "SNAPSHOT",
                seq: watermark,
                row: Some(row(seq, values)),
                old_row: None,
                reset,
            })
            .collect(),
        FeedBatch::Changes(changes) => changes
            .iter()
            .map(|c| ChangeObj {
                op: c.kind.as_str(),
                seq: c.seq,
                row: c.new.clone().map(|v| row(c.seq, v)),
                old_row: c.old.clone().map(|v| RowObj {
                    deleted: c.new.is_none(),
                    ..row(c.seq, v)
                }),
                reset: false,
            })
            .collect(),
    }
}

fn seq_arg(ctx: &ResolverContext<'_>, a: Arg) -> GqlResult<Option<Seq>> {
    match arg(ctx, a) {
        None => Ok(None),
        Some(v) => match from_gql(ColumnType::BigInt, v).gql()? {
            Value::BigInt(n) if n >= 0 => Ok(Some(Seq(n as u64))),
            _ => Err(gql_error(
                ErrorCode::InvalidInput,
                format!("'{}' must be a non-negative BigInt", a.name()),
            )),
        },
    }
}

/// `subscription { <t>_changes(where, since_seq, initial_batch_size) }`: change events,
/// in batches, in commit order.
pub fn changes_subscription_field(meta: &Arc<TableMeta>) -> SubscriptionField {
    let m = meta.clone();
    let field = SubscriptionField::new(
        meta.names.changes(),
        TypeRef::named_nn_list_nn(meta.names.change()),
        move |ctx| {
            let meta = m.clone();
            SubscriptionFieldFuture::new(async move {
                let env = env(&ctx)?;
                drive_subscription(&ctx, &env, || {
                    let filter = filter_arg(&ctx, env.engine, &meta)?;
                    let start = FeedStart {
                        since_seq: seq_arg(&ctx, Arg::SinceSeq)?,
                        initial_batch_size: int_arg(&ctx, Arg::InitialBatchSize)?
                            .map(|n| n.clamp(1, env.limits.max_rows)),
                    };
                    let label = label(&ctx, &meta.names.changes());
                    let feed = env
                        .engine
                        .subscribe_changes(env.exec, &meta.id, filter.as_ref(), start, label)
                        .gql()?;
                    Ok(SubscriptionSource::Changes(feed))
                }, None)
            })
        },
    )
    .description(format!(
        "Changes to rows of {}: optional current rows first (SNAPSHOT), then INSERT, UPDATE and DELETE events in commit order.",
        meta.id
    ));
    RootField::Changes
        .inputs(meta)
        .into_iter()
        .fold(field, SubscriptionField::argument)
}

fn change_of<'a>(ctx: &ResolverContext<'a>) -> Option<&'a ChangeObj> {
    ctx.parent_value.downcast_ref::<ChangeObj>()
}

pub fn change_op_field() -> Field {
    Field::new("op", TypeRef::named_nn(crate::objects::CHANGE_OP), |ctx| {
        FieldFuture::Value(change_of(&ctx).map(|c| FieldValue::value(Gql::Enum(async_graphql::Name::new(c.op)))))
    })
}

pub fn change_seq_field() -> Field {
    Field::new("seq", TypeRef::named_nn("BigInt"), |ctx| {
        FieldFuture::Value(change_of(&ctx).map(|c| FieldValue::value(Gql::String(c.seq.as_i64().to_string()))))
    })
    .description("The change's position in the change log; for SNAPSHOT events, the position the snapshot reflects. Resume with since_seq set to the last one received.")
}

pub fn change_row_field(meta: &Arc<TableMeta>, old: bool) -> Field {
    let name = if old { "old_row" } else { "row" };
    Field::new(name, TypeRef::named(&meta.names.base), move |ctx| {
        FieldFuture::Value(
            change_of(&ctx)
                .and_then(|c| if old { c.old_row.as_ref() } else { c.row.as_ref() })
                .map(|r| FieldValue::borrowed_any(r)),
        )
    })
    .description(if old {
        "The row before an UPDATE or DELETE."
    } else {
        "The row after a SNAPSHOT, INSERT or UPDATE; null for DELETE."
    })
}

pub fn change_reset_field() -> Field {
    Field::new("reset", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
        FieldFuture::Value(change_of(&ctx).map(|c| FieldValue::value(Gql::Boolean(c.reset))))
    })
    .description("True on SNAPSHOT events that replace a since_seq older than the change log keeps: drop what you have and rebuild from them.")
}
