//! Catalog search: `GET /api/product?q=&sku=&minPrice=&maxPrice=` — words of the name and the
//! description (case-insensitive, each query word a prefix of some word, all query words required),
//! an exact SKU, an inclusive price range; in creation order, paged, with the total.
//!
//! **Why an index inside the service, not in MongoDB.** The platform's MongoDB is FerretDB 1.24 on
//! SQLite, which hands SQLite only one filter shape, `{_id: <value>}` (FerretDB's
//! `internal/backends/sqlite/collection.go`); every other filter — a regex, `$text`, a term
//! collection read by prefix, even `{skuCode: x}` under its unique index — reads and decodes every
//! document of the collection in Go. At 100,000 products that is most of a second per query
//! (docs/benchmarks.md, "Catalog search"). So each replica keeps a [`CatalogIndex`] of the
//! searchable fields (words → product ordinals, SKU → ordinal, prices), answers the query from it in
//! microseconds, and reads back only the page's products, each by `_id` — the one lookup FerretDB
//! does with SQLite's primary key — re-checking each against the query, so a product changed a
//! moment ago by another replica is never shown under words it no longer has.
//!
//! **Keeping replicas current.** Every product write also inserts a row into `product_changes`
//! (`{_id, product, at}`, [`crate::store::ProductStore::record_change`]); inserts are atomic on
//! FerretDB, unlike read-modify-write updates, so no change can be lost between two writers. Each
//! replica applies its own writes to its index at once (read-your-writes), and [`run`] polls the
//! small change collection every `refresh` (default 1 s, at most 10 s), re-reading each product it has not seen
//! yet by `_id`; rows older than [`CHANGE_RETENTION`] (30 s) are deleted every tenth poll. A replica that could not poll
//! for longer than the retention, or whose write crashed between the product and its change row,
//! would miss changes: it rebuilds from a full read when polling resumes after such a gap, and every
//! `rebuild_every` (default 10 min) in any case.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mongodb::bson::oid::ObjectId;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use crate::model::ProductView;
use crate::store::{ProductStore, StoreError};

/// How long a row of `product_changes` is kept: a replica that polls within this window sees every
/// change; one that could not poll for longer rebuilds. Short, because every poll reads the whole
/// collection (FerretDB 1.24 would scan for a range filter anyway): at 250 writes/s that is ~7,500
/// rows, not the 30,000 a two-minute window held.
pub const CHANGE_RETENTION: Duration = Duration::from_secs(30);
/// The longest refresh interval honoured: polls must come well inside [`CHANGE_RETENTION`].
const MAX_REFRESH: Duration = Duration::from_secs(10);
/// Old rows are deleted every this many polls (the delete is a scan too).
const EXPIRE_EVERY_POLLS: u32 = 10;

/// Longest accepted `q`, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most words in one `q`.
pub const MAX_QUERY_WORDS: usize = 8;
/// Indexed words are cut to this many characters (a query word longer than that still matches by
/// its first characters).
const MAX_WORD_CHARS: usize = 40;

/// The words of a text: lower-cased (Unicode), split on everything that is not a letter or a digit,
/// cut to [`MAX_WORD_CHARS`].
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().chars().take(MAX_WORD_CHARS).collect())
}

/// A parsed search: every field optional; an empty query matches every product.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Query words (lower-cased, deduplicated); each must be a prefix of a word of the product.
    pub words: Vec<String>,
    /// Exact name (the original's `name` filter, kept).
    pub name: Option<String>,
    /// Exact SKU code.
    pub sku: Option<String>,
    /// Inclusive lower price bound.
    pub min_price: Option<Decimal>,
    /// Inclusive upper price bound.
    pub max_price: Option<Decimal>,
}

/// A query parameter that cannot be used; `field` is the parameter's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct QueryError {
    /// Parameter name as the client sent it.
    pub field: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl Query {
    /// Parse the search parameters of `GET /api/product`; empty strings count as absent.
    pub fn parse(
        q: Option<&str>,
        name: Option<&str>,
        sku: Option<&str>,
        min_price: Option<&str>,
        max_price: Option<&str>,
    ) -> Result<Query, QueryError> {
        fn present(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let mut query = Query {
            name: name.filter(|n| !n.is_empty()).map(str::to_owned),
            sku: present(sku).map(str::to_owned),
            ..Query::default()
        };
        if let Some(q) = present(q) {
            if q.chars().count() > MAX_QUERY_CHARS {
                return Err(QueryError {
                    field: "q",
                    detail: format!("q must be at most {MAX_QUERY_CHARS} characters"),
                });
            }
            let mut seen = HashSet::new();
            query.words = words(q).filter(|w| seen.insert(w.clone())).collect();
            if query.words.len() > MAX_QUERY_WORDS {
                return Err(QueryError {
                    field: "q",
                    detail: format!("q must have at most {MAX_QUERY_WORDS} words"),
                });
            }
        }
        let price = |field: &'static str, v: Option<&str>| -> Result<Option<Decimal>, QueryError> {
            present(v)
                .map(|s| match Decimal::from_str(s) {
                    Ok(d) if d >= Decimal::ZERO => Ok(d),
                    _ => Err(QueryError {
                        field,
                        detail: format!(
                            "{field} must be a non-negative decimal number such as 19.99"
                        ),
                    }),
                })
                .transpose()
        };
        query.min_price = price("minPrice", min_price)?;
        query.max_price = price("maxPrice", max_price)?;
        if let (Some(lo), Some(hi)) = (query.min_price, query.max_price)
            && lo > hi
        {
            return Err(QueryError {
                field: "minPrice",
                detail: format!("minPrice ({lo}) is above maxPrice ({hi})"),
            });
        }
        Ok(query)
    }

    /// Whether a product matches (the same rule the index applies; used to re-check what is read
    /// back from the database).
    pub fn matches(&self, p: &ProductView) -> bool {
        let Ok(price) = Decimal::from_str(&p.price) else {
            return false;
        };
        let own: Vec<String> = words(&p.name).chain(words(&p.description)).collect();
        self.accepts(&p.name, &p.sku_code, price, &own, None)
    }

    /// The one matching rule, over a product's fields and (cut) words; the query word at
    /// `skip_word` is left out (the index already matched it through its postings).
    fn accepts<W: AsRef<str>>(
        &self,
        name: &str,
        sku: &str,
        price: Decimal,
        own: &[W],
        skip_word: Option<usize>,
    ) -> bool {
        if self.name.as_deref().is_some_and(|n| n != name)
            || self.sku.as_deref().is_some_and(|s| s != sku)
            || self.min_price.is_some_and(|lo| price < lo)
            || self.max_price.is_some_and(|hi| price > hi)
        {
            return false;
        }
        self.words
            .iter()
            .enumerate()
            .all(|(i, q)| Some(i) == skip_word || own.iter().any(|w| prefix_matches(w.as_ref(), q)))
    }
}

/// A query word matches an indexed word it is a prefix of; a query word longer than the indexed
/// cut matches by its first [`MAX_WORD_CHARS`] characters.
fn prefix_matches(word: &str, query: &str) -> bool {
    if query.chars().count() > MAX_WORD_CHARS {
        let cut: String = query.chars().take(MAX_WORD_CHARS).collect();
        word == cut
    } else {
        word.starts_with(query)
    }
}

/// One indexed product.
#[derive(Debug, Clone)]
struct Slot {
    id: ObjectId,
    name: Box<str>,
    sku: Box<str>,
    price: Decimal,
    words: Box<[Box<str>]>,
}

/// The searchable fields of every product, in memory. Products are numbered in the order they were
/// indexed (a full build numbers them in `_id`, i.e. creation, order); results come in that order.
#[derive(Debug, Default)]
pub struct CatalogIndex {
    slots: Vec<Option<Slot>>,
    by_id: HashMap<ObjectId, u32>,
    by_sku: HashMap<Box<str>, u32>,
    postings: BTreeMap<Box<str>, BTreeSet<u32>>,
    live: usize,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hits {
    /// Ids of the products on the page, in order.
    pub ids: Vec<ObjectId>,
    /// Number of products matching (all pages).
    pub total: u64,
}

impl CatalogIndex {
    /// An index of `products`, numbered in `_id` order.
    pub fn build(mut products: Vec<ProductView>) -> CatalogIndex {
        products.sort_by(|a, b| a.id.cmp(&b.id));
        let mut index = CatalogIndex::default();
        for p in &products {
            index.upsert(p);
        }
        index
    }

    /// Add or replace one product (a replaced product keeps its place in the order).
    pub fn upsert(&mut self, p: &ProductView) {
        let Ok(id) = ObjectId::parse_str(&p.id) else {
            return;
        };
        let Ok(price) = Decimal::from_str(&p.price) else {
            return;
        };
        let ord = match self.by_id.get(&id) {
            Some(&ord) => {
                self.unlink(ord);
                ord
            }
            None => {
                let Ok(ord) = u32::try_from(self.slots.len()) else {
                    return;
                };
                self.slots.push(None);
                self.by_id.insert(id, ord);
                ord
            }
        };
        let own: BTreeSet<String> = words(&p.name).chain(words(&p.description)).collect();
        for w in &own {
            self.postings
                .entry(w.as_str().into())
                .or_default()
                .insert(ord);
        }
        let sku: Box<str> = p.sku_code.as_str().into();
        if !sku.is_empty() {
            self.by_sku.insert(sku.clone(), ord);
        }
        if let Some(slot) = self.slots.get_mut(ord as usize) {
            *slot = Some(Slot {
                id,
                name: p.name.as_str().into(),
                sku,
                price,
                words: own.into_iter().map(String::into_boxed_str).collect(),
            });
        }
        self.live += 1;
    }

    /// Forget one product (no-op when it is not indexed).
    pub fn remove(&mut self, id: &ObjectId) {
        if let Some(ord) = self.by_id.remove(id) {
            self.unlink(ord);
        }
    }

    /// Take the product at `ord` out of the postings and the SKU map, leaving its place empty.
    fn unlink(&mut self, ord: u32) {
        let Some(old) = self.slots.get_mut(ord as usize).and_then(Option::take) else {
            return;
        };
        self.live = self.live.saturating_sub(1);
        for w in old.words.iter() {
            if let Some(set) = self.postings.get_mut(w) {
                set.remove(&ord);
                if set.is_empty() {
                    self.postings.remove(w);
                }
            }
        }
        if self.by_sku.get(&old.sku) == Some(&ord) {
            self.by_sku.remove(&old.sku);
        }
    }

    /// Ordinals of the products having a word that starts with `q`, ascending.
    fn prefix_postings(&self, q: &str) -> Vec<u32> {
        let cut: String = q.chars().take(MAX_WORD_CHARS).collect();
        if cut.chars().count() < q.chars().count() {
            // Longer than any indexed word: only the word cut to the same length can match.
            return self
                .postings
                .get(cut.as_str())
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
        }
        let mut out: Vec<u32> = Vec::new();
        let range = self
            .postings
            .range::<str, _>((Bound::Included(cut.as_str()), Bound::Unbounded));
        for (w, set) in range {
            if !w.starts_with(cut.as_str()) {
                break;
            }
            out.extend(set.iter().copied());
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The products matching `query`, in index order: page `page` of `size`, and the total.
    pub fn search(&self, query: &Query, page: u64, size: u64) -> Hits {
        // Candidates: the SKU's one product, else the postings of the rarest query word (the
        // other words and the filters are checked on each candidate), else every product.
        let (candidates, skip_word): (Vec<u32>, Option<usize>) = if let Some(sku) = &query.sku {
            (
                self.by_sku.get(sku.as_str()).copied().into_iter().collect(),
                None,
            )
        } else if query.words.is_empty() {
            ((0..self.slots.len() as u32).collect(), None)
        } else {
            let mut best: Option<(usize, Vec<u32>)> = None;
            for (i, q) in query.words.iter().enumerate() {
                let p = self.prefix_postings(q);
                if best.as_ref().is_none_or(|(_, b)| p.len() < b.len()) {
                    best = Some((i, p));
                }
            }
            match best {
                Some((i, p)) => (p, Some(i)),
                None => (Vec::new(), None),
            }
        };
        let skip = page.saturating_mul(size);
        let mut total = 0u64;
        let mut ids = Vec::new();
        for ord in candidates {
            let Some(Some(slot)) = self.slots.get(ord as usize) else {
                continue;
            };
            if !query.accepts(&slot.name, &slot.sku, slot.price, &slot.words, skip_word) {
                continue;
            }
            if total >= skip && (ids.len() as u64) < size {
                ids.push(slot.id);
            }
            total += 1;
        }
        Hits { ids, total }
    }
}

/// The index shared by the handlers and [`run`]; `None` until the first build finished.
#[derive(Clone, Default)]
pub struct SharedIndex(Arc<RwLock<Option<CatalogIndex>>>);

impl SharedIndex {
    /// Search, or `None` while the first build is still running.
    pub fn search(&self, query: &Query, page: u64, size: u64) -> Option<Hits> {
        let guard = self.0.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|ix| ix.search(query, page, size))
    }

    /// Apply a product as it now is (`None`: it is gone) — the service's own writes, and the
    /// changes [`run`] reads.
    pub fn apply(&self, id: &ObjectId, now: Option<&ProductView>) {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(ix) = guard.as_mut() {
            match now {
                Some(p) => ix.upsert(p),
                None => ix.remove(id),
            }
        }
    }

    fn replace(&self, ix: CatalogIndex) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(ix);
    }
}

/// Build the index from a full read, then keep it current from `product_changes` until `shutdown`
/// (see the module docs). Failures are logged and retried; the handlers answer 503 only until the
/// first build finished.
pub async fn run(
    index: SharedIndex,
    store: ProductStore,
    refresh: Duration,
    rebuild_every: Duration,
    shutdown: CancellationToken,
) {
    let refresh = refresh.min(MAX_REFRESH);
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut built_at: Option<Instant> = None;
    let mut last_poll = Instant::now();
    let mut polls: u32 = 0;
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let stale = built_at.is_none_or(|t| t.elapsed() >= rebuild_every)
            || last_poll.elapsed() >= CHANGE_RETENTION.saturating_sub(refresh.saturating_mul(2));
        if stale {
            let started = Instant::now();
            match store.all_products().await {
                Ok(products) => {
                    let n = products.len();
                    index.replace(CatalogIndex::build(products));
                    // Changes still in the collection are applied again on top of the new build
                    // (it may have read a product before a write another replica recorded).
                    seen.clear();
                    built_at = Some(Instant::now());
                    last_poll = Instant::now();
                    tracing::info!(
                        products = n,
                        took_ms = started.elapsed().as_millis() as u64,
                        "catalog search index built"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "building the catalog search index failed; retrying");
                    continue;
                }
            }
        }
        match poll(&index, &store, &mut seen).await {
            Ok(()) => last_poll = Instant::now(),
            Err(e) => tracing::warn!(error = %e, "reading product changes failed; retrying"),
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(EXPIRE_EVERY_POLLS)
            && let Err(e) = store.expire_changes(CHANGE_RETENTION).await
        {
            tracing::warn!(error = %e, "deleting old product changes failed; retrying");
        }
    }
}

/// Apply the changes not seen yet; forget the ids of rows that expired.
async fn poll(
    index: &SharedIndex,
    store: &ProductStore,
    seen: &mut HashSet<ObjectId>,
) -> Result<(), StoreError> {
    let changes = store.recent_changes().await?;
    let current: HashSet<ObjectId> = changes.iter().map(|c| c.change).collect();
    for c in &changes {
        if seen.contains(&c.change) {
            continue;
        }
        let now = store.get(c.product).await?;
        index.apply(&c.product, now.as_ref());
        seen.insert(c.change);
    }
    seen.retain(|id| current.contains(id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StockSync;

    fn product(id: u8, name: &str, description: &str, price: &str, sku: &str) -> ProductView {
        ProductView {
            id: ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, id]).to_hex(),
            name: name.into(),
            description: description.into(),
            price: price.into(),
            sku_code: sku.into(),
            quantity: None,
            stock_sync: StockSync::Synced,
        }
    }

    fn catalog() -> CatalogIndex {
        CatalogIndex::build(vec![
            product(
                3,
                "Galaxy S24",
                "Samsung phone, 256 GB",
                "899.00",
                "galaxy-s24",
            ),
            product(
                1,
                "iPhone 15",
                "Apple's phone; titanium frame",
                "1199.00",
                "iphone-15",
            ),
            product(
                2,
                "Pixel Buds",
                "Wireless earbuds by Google",
                "99.50",
                "pixel-buds",
            ),
            product(
                4,
                "Phone case",
                "Silicone case for iPhone 15",
                "19.99",
                "case-15",
            ),
        ])
    }

    fn q(text: &str) -> Query {
        Query::parse(Some(text), None, None, None, None).unwrap()
    }

    fn names(ix: &CatalogIndex, query: &Query) -> Vec<String> {
        let hits = ix.search(query, 0, 50);
        hits.ids
            .iter()
            .map(|id| {
                let ord = ix.by_id[id];
                ix.slots[ord as usize].as_ref().unwrap().name.to_string()
            })
            .collect()
    }

    #[test]
    fn words_are_lower_cased_and_split_on_punctuation() {
        let w: Vec<String> = words("Apple's iPhone-15, ÉCRAN 6.1\"").collect();
        assert_eq!(w, ["apple", "s", "iphone", "15", "écran", "6", "1"]);
    }

    #[test]
    fn every_query_word_must_prefix_a_word_of_name_or_description() {
        let ix = catalog();
        // In creation (_id) order, whatever the build order.
        assert_eq!(
            names(&ix, &q("PHONE")),
            ["iPhone 15", "Galaxy S24", "Phone case"]
        );
        assert_eq!(names(&ix, &q("phone iphone")), ["iPhone 15", "Phone case"]);
        assert_eq!(names(&ix, &q("ear")), ["Pixel Buds"]);
        assert_eq!(names(&ix, &q("titanium google")), Vec::<String>::new());
        // A word inside another word does not match ("hone" is not a word start).
        assert_eq!(names(&ix, &q("hone")), Vec::<String>::new());
    }

    #[test]
    fn sku_and_price_range_filter_inclusively() {
        let ix = catalog();
        let range = Query::parse(None, None, None, Some("99.5"), Some("899")).unwrap();
        assert_eq!(names(&ix, &range), ["Pixel Buds", "Galaxy S24"]);
        let sku = Query::parse(Some("phone"), None, Some("case-15"), None, None).unwrap();
        assert_eq!(names(&ix, &sku), ["Phone case"]);
        let wrong = Query::parse(Some("buds"), None, Some("case-15"), None, None).unwrap();
        assert_eq!(names(&ix, &wrong), Vec::<String>::new());
    }

    #[test]
    fn pages_count_the_total_of_all_pages() {
        let ix = CatalogIndex::build(
            (1..=25)
                .map(|i| product(i, &format!("Widget {i}"), "", "1.00", &format!("w-{i}")))
                .collect(),
        );
        let all = Query::parse(Some("widget"), None, None, None, None).unwrap();
        let p0 = ix.search(&all, 0, 10);
        let p2 = ix.search(&all, 2, 10);
        let p9 = ix.search(&all, 9, 10);
        assert_eq!((p0.ids.len(), p0.total), (10, 25));
        assert_eq!((p2.ids.len(), p2.total), (5, 25));
        assert_eq!((p9.ids.len(), p9.total), (0, 25));
        let first_of_page_2 = product(21, "", "", "0", "").id;
        assert_eq!(p2.ids[0].to_hex(), first_of_page_2);
    }

    #[test]
    fn an_update_replaces_the_words_and_a_removal_forgets_the_product() {
        let mut ix = catalog();
        ix.upsert(&product(
            2,
            "Pixel Watch",
            "Smartwatch by Google",
            "349.00",
            "pixel-buds",
        ));
        assert_eq!(names(&ix, &q("buds")), Vec::<String>::new());
        assert_eq!(names(&ix, &q("smart")), ["Pixel Watch"]);
        // Its place in the order stays.
        assert_eq!(names(&ix, &q("google")), ["Pixel Watch"]);
        let id = ObjectId::parse_str(product(2, "", "", "0", "").id).unwrap();
        ix.remove(&id);
        assert_eq!(names(&ix, &q("google")), Vec::<String>::new());
        assert_eq!(ix.live, 3);
        let sku = Query::parse(None, None, Some("pixel-buds"), None, None).unwrap();
        assert_eq!(ix.search(&sku, 0, 10).total, 0);
    }

    #[test]
    fn the_recheck_rule_is_the_index_rule() {
        let p = product(9, "Desk lamp", "LED, dimmable", "45.00", "lamp-1");
        for (query, expect) in [
            (q("led dim"), true),
            (q("lamp desk"), true),
            (q("lampshade"), false),
            (
                Query::parse(None, None, None, Some("45.00"), Some("45")).unwrap(),
                true,
            ),
            (
                Query::parse(None, None, None, Some("45.01"), None).unwrap(),
                false,
            ),
            (
                Query::parse(None, Some("Desk lamp"), None, None, None).unwrap(),
                true,
            ),
            (
                Query::parse(None, Some("desk lamp"), None, None, None).unwrap(),
                false,
            ),
        ] {
            assert_eq!(query.matches(&p), expect, "{query:?}");
            let ix = CatalogIndex::build(vec![p.clone()]);
            assert_eq!(
                ix.search(&query, 0, 10).total,
                u64::from(expect),
                "{query:?}"
            );
        }
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let err = |r: Result<Query, QueryError>| r.unwrap_err().field;
        assert_eq!(
            err(Query::parse(None, None, None, Some("cheap"), None)),
            "minPrice"
        );
        assert_eq!(
            err(Query::parse(None, None, None, None, Some("-1"))),
            "maxPrice"
        );
        assert_eq!(
            err(Query::parse(None, None, None, Some("10"), Some("5"))),
            "minPrice"
        );
        assert_eq!(
            err(Query::parse(
                Some("a b c d e f g h i"),
                None,
                None,
                None,
                None
            )),
            "q"
        );
        // Repeated words count once.
        assert_eq!(
            Query::parse(Some(&"a ".repeat(20)), None, None, None, None)
                .unwrap()
                .words,
            ["a"]
        );
        assert_eq!(
            err(Query::parse(Some(&"x".repeat(201)), None, None, None, None)),
            "q"
        );
        // Blank parameters are absent.
        assert_eq!(
            Query::parse(Some("  "), Some(""), Some(""), Some(""), Some("")).unwrap(),
            Query::default()
        );
    }

    #[test]
    fn a_query_word_longer_than_the_indexed_cut_matches_by_its_start() {
        let long = "a".repeat(60);
        let ix = CatalogIndex::build(vec![product(1, &long, "", "1.00", "long")]);
        assert_eq!(ix.search(&q(&long), 0, 10).total, 1);
        assert_eq!(ix.search(&q(&"a".repeat(10)), 0, 10).total, 1);
        assert!(q(&long).matches(&product(1, &long, "", "1.00", "long")));
    }
}
