//! Reads of one partition across both tiers, as rows: the path of typed selects,
//! point lookups, subscriptions' first results and the commit pipeline's key checks
//! once a partition has segments.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use kalamdb_auth::identity::UserId;
use kalamdb_storage::cold::reader::ReadRequest;
use kalamdb_storage::seq::Seq;

use crate::catalog::schema::TableDef;
use crate::codec::{StoredRow, partition_prefix, pk_bytes};
use crate::engine::{Engine, Row};
use crate::error::Result;
use crate::read::reader::{KeyPlan, PartitionReader};
use crate::tiers::cold::{conform, key_filter, partition_dir, plan_allows, row_at, segment_out_schema};
use crate::types::{Pk, Value};

impl Engine {
    pub(crate) fn reader<'a>(&'a self, table: &'a TableDef, user: Option<&'a UserId>) -> PartitionReader<'a> {
        PartitionReader {
            store: &self.store,
            table,
            user,
        }
    }

    /// The visible rows of a partition the plan covers, in key order, and the position
    /// they reflect: hot and cold merged by primary key, newest version first.
    pub(crate) async fn partition_rows(
        &self,
        table: &Arc<TableDef>,
        user: Option<&UserId>,
        plan: &KeyPlan,
    ) -> Result<(Vec<Row>, Seq)> {
        let reader = self.reader(table, user);
        let floor = reader.ttl_floor();
        let prefix = partition_prefix(user).len();
        let ((mut versions, mut high), manifest) = self
            .cold
            .hot_then_manifest(table, user, |_| {
                let mut high = Seq::ZERO;
                let mut versions: BTreeMap<Vec<u8>, (Seq, Option<Vec<Value>>)> = BTreeMap::new();
                reader.scan_stored(plan, |key, row: StoredRow| {
                    high = high.max(row.seq);
                    let live = !row.deleted && floor.is_none_or(|f| row.seq >= f);
                    versions.insert(key[prefix..].to_vec(), (row.seq, live.then_some(row.values)));
                    true
                })?;
                Ok((versions, high))
            })
            .await?;
        if !manifest.is_empty() {
            high = high.max(Seq(manifest.covered_seq));
            let dir = partition_dir(table, user);
            let segs: Vec<_> = manifest
                .newest_first()
                .filter(|s| plan_allows(table, s, plan))
                .collect();
            let key = match plan {
                KeyPlan::Points(pks) => key_filter(table, pks),
                _ => None,
            };
            let read = self
                .cold
                .read_segments(&dir, &segs, || ReadRequest {
                    key: key.clone(),
                    ..ReadRequest::default()
                })
                .await?;
            let n = table.current().columns.len();
            let all: Vec<usize> = (0..=n).collect();
            let out = Arc::new(segment_out_schema(table, &all));
            let schema = table.current();
            // the keys of a point plan, encoded once: a segment read returns whole pages
            let points: Option<std::collections::HashSet<Vec<u8>>> = match plan {
                KeyPlan::Points(pks) => Some(pks.iter().map(pk_bytes).collect::<Result<_>>()?),
                _ => None,
            };
            for batch in read.iter().flatten().flatten() {
                let b = conform(table, batch, &all, &out)?;
                for i in 0..b.num_rows() {
                    let (seq, values) = row_at(table, &b, i)?;
                    let k = pk_bytes(&schema.pk_of(&values))?;
                    let covered = match &points {
                        Some(p) => p.contains(&k),
                        None => plan.covers(&k),
                    };
                    if !covered {
                        continue;
                    }
                    match versions.entry(k) {
                        Entry::Vacant(e) => {
                            e.insert((seq, Some(values)));
                        }
                        Entry::Occupied(mut e) if e.get().0 < seq => {
                            e.insert((seq, Some(values)));
                        }
                        Entry::Occupied(_) => {}
                    }
                }
            }
        }
        let rows = versions.into_values().filter_map(|(s, v)| v.map(|v| (s, v))).collect();
        Ok((rows, high))
    }

    /// One key's visible version: the hot one (row or tombstone) if any, else the
    /// newest cold one.
    pub(crate) async fn lookup(&self, table: &Arc<TableDef>, user: Option<&UserId>, pk: &Pk) -> Result<Option<Row>> {
        let reader = self.reader(table, user);
        if let Some(row) = reader.get_stored(pk)? {
            let floor = reader.ttl_floor();
            let live = !row.deleted && floor.is_none_or(|f| row.seq >= f);
            return Ok(live.then_some((row.seq, row.values)));
        }
        self.cold.get(table, user, pk).await
    }
}
