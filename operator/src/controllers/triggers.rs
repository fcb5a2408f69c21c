//! Watch streams that trigger reconciles only when something that matters
//! changed.
//!
//! A key's status changes whenever a Sensor using it is created (its count),
//! and a Sensor's status changes on every rollout step. Mapping every such
//! write of one kind onto reconciles of the other makes each new Sensor
//! re-reconcile every Sensor of its key: quadratic work in the Sensors per
//! key. Only spec changes (a new generation), creations and deletions cross
//! over.

use std::collections::HashMap;
use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Objects that were created, deleted, or whose generation changed.
pub fn spec_changes<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut seen: HashMap<String, Option<i64>> = HashMap::new();
    watch(api, cfg).default_backoff().filter_map(move |event| {
        let id = |o: &K| {
            o.uid().unwrap_or_else(|| {
                format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
            })
        };
        let out = match event {
            Ok(Event::Apply(o) | Event::InitApply(o)) => {
                let generation = o.meta().generation;
                (seen.insert(id(&o), generation) != Some(generation)).then_some(Ok(o))
            }
            Ok(Event::Delete(o)) => {
                seen.remove(&id(&o));
                Some(Ok(o))
            }
            Ok(Event::Init | Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}
