//! The catalog: namespaces and tables with their versioned schemas, persisted in the
//! system partition and loaded on start. Readers get `Arc<TableDef>` snapshots; a
//! change builds a new definition and swaps it in.

pub mod schema;
pub mod system_tables;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kalamdb_storage::{hot_store::HotStore, hot_store::Partition, hot_store::WriteBatch, keys::prefix_successor};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::catalog::schema::TableDef;
use crate::error::{EngineError, Result};
use crate::ids::{NamespaceId, StorageUid, TableId};

const NS_PREFIX: &str = "catalog/ns/";
const TABLE_PREFIX: &str = "catalog/table/";
const NEXT_UID_KEY: &[u8] = b"catalog/next_uid";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceDef {
    pub id: NamespaceId,
    pub created_at_ms: u64,
}

#[derive(Default)]
struct State {
    namespaces: BTreeMap<NamespaceId, NamespaceDef>,
    tables: BTreeMap<TableId, Arc<TableDef>>,
    by_uid: HashMap<u64, Arc<TableDef>>,
    next_uid: u64,
}

pub struct Catalog {
    state: RwLock<State>,
    /// Bumped on every change, so schema caches (GraphQL) know to rebuild.
    generation: AtomicU64,
}

fn table_key(id: &TableId) -> Vec<u8> {
    format!("{TABLE_PREFIX}{}.{}", id.namespace, id.table).into_bytes()
}

fn ns_key(id: &NamespaceId) -> Vec<u8> {
    format!("{NS_PREFIX}{id}").into_bytes()
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EngineError::Internal(e.to_string()))
}

impl Catalog {
    pub fn load(store: &HotStore) -> Result<Self> {
        let sys = Partition::system();
        let mut st = State {
            next_uid: 1,
            ..Default::default()
        };
        let scan_json = |prefix: &str, f: &mut dyn FnMut(&[u8]) -> Result<()>| -> Result<()> {
            let upper = prefix_successor(prefix.as_bytes());
            let mut it = store.scan(&sys, prefix.as_bytes(), upper.as_deref())?;
            while let Some((_, v)) = it.next_entry()? {
                f(v)?;
            }
            Ok(())
        };
        let bad = |e: serde_json::Error| EngineError::Internal(format!("catalog: {e}"));
        scan_json(NS_PREFIX, &mut |v| {
            let ns: NamespaceDef = serde_json::from_slice(v).map_err(bad)?;
            st.namespaces.insert(ns.id.clone(), ns);
            Ok(())
        })?;
        scan_json(TABLE_PREFIX, &mut |v| {
            let t: TableDef = serde_json::from_slice(v).map_err(bad)?;
            let t = Arc::new(t);
            st.by_uid.insert(t.uid.0, t.clone());
            st.tables.insert(t.id.clone(), t);
            Ok(())
        })?;
        if let Some(v) = store.get(&sys, NEXT_UID_KEY)? {
            st.next_uid = u64::from_be_bytes(v.try_into().map_err(|_| EngineError::Internal("catalog uid".into()))?);
        }
        Ok(Self {
            state: RwLock::new(st),
            generation: AtomicU64::new(1),
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn namespace_exists(&self, ns: &NamespaceId) -> bool {
        self.state.read().namespaces.contains_key(ns)
    }

    pub fn namespaces(&self) -> Vec<NamespaceDef> {
        self.state.read().namespaces.values().cloned().collect()
    }

    pub fn table(&self, id: &TableId) -> Option<Arc<TableDef>> {
        self.state.read().tables.get(id).cloned()
    }

    pub fn table_by_uid(&self, uid: StorageUid) -> Option<Arc<TableDef>> {
        self.state.read().by_uid.get(&uid.0).cloned()
    }

    pub fn tables(&self) -> Vec<Arc<TableDef>> {
        self.state.read().tables.values().cloned().collect()
    }

    pub fn tables_in(&self, ns: &NamespaceId) -> Vec<Arc<TableDef>> {
        self.state
            .read()
            .tables
            .values()
            .filter(|t| &t.id.namespace == ns)
            .cloned()
            .collect()
    }

    /// Looks a table up, telling an unknown namespace from an unknown table.
    pub fn resolve(&self, id: &TableId) -> Result<Arc<TableDef>> {
        let st = self.state.read();
        if let Some(t) = st.tables.get(id) {
            return Ok(t.clone());
        }
        if !st.namespaces.contains_key(&id.namespace) {
            return Err(EngineError::NamespaceNotFound(id.namespace.to_string()));
        }
        Err(EngineError::TableNotFound(id.to_string()))
    }

    /// Reserves a new storage uid (persisted with the table that uses it).
    pub fn allocate_uid(&self) -> StorageUid {
        let mut st = self.state.write();
        let uid = st.next_uid;
        st.next_uid += 1;
        StorageUid(uid)
    }

    pub fn put_namespace(&self, store: &HotStore, ns: NamespaceDef) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(&Partition::system(), ns_key(&ns.id), to_json(&ns)?);
        store.write(b)?;
        self.state.write().namespaces.insert(ns.id.clone(), ns);
        self.bump();
        Ok(())
    }

    pub fn remove_namespace(&self, store: &HotStore, ns: &NamespaceId) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete(&Partition::system(), ns_key(ns));
        store.write(b)?;
        self.state.write().namespaces.remove(ns);
        self.bump();
        Ok(())
    }

    /// Creates or replaces a table definition.
    pub fn put_table(&self, store: &HotStore, table: TableDef) -> Result<Arc<TableDef>> {
        let next_uid = self.state.read().next_uid.max(table.uid.0 + 1);
        let mut b = WriteBatch::new();
        b.put(&Partition::system(), table_key(&table.id), to_json(&table)?);
        b.put(
            &Partition::system(),
            NEXT_UID_KEY.to_vec(),
            next_uid.to_be_bytes().to_vec(),
        );
        store.write(b)?;
        let t = Arc::new(table);
        {
            let mut st = self.state.write();
            st.next_uid = next_uid;
            st.by_uid.insert(t.uid.0, t.clone());
            st.tables.insert(t.id.clone(), t.clone());
        }
        self.bump();
        Ok(t)
    }

    pub fn remove_table(&self, store: &HotStore, id: &TableId) -> Result<Option<Arc<TableDef>>> {
        let mut b = WriteBatch::new();
        b.delete(&Partition::system(), table_key(id));
        store.write(b)?;
        let removed = {
            let mut st = self.state.write();
            let t = st.tables.remove(id);
            if let Some(t) = &t {
                st.by_uid.remove(&t.uid.0);
            }
            t
        };
        self.bump();
        Ok(removed)
    }
}
