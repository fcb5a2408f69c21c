//! `sightline search` and `sightline inventory`.
//!
//! With `--api` (or `SIGHTLINE_API`) the operator's search API answers,
//! from its in-memory index, authenticated with the kubeconfig's bearer
//! token. Without it, or when the API cannot be reached, the CLI lists the
//! Assets itself with the kubeconfig's credentials and runs the same query
//! code locally, so results are the same either way and RBAC applies in both.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use kube::api::{Api, ListParams};
use sightline_crds::Asset;
use sightline_inventory::fields;
use sightline_inventory::index::{Index, SearchResult, Summary};
use sightline_inventory::query::parse_query;

/// How results are printed.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Name, kind, OS, lifecycle, severity, last seen.
    Table,
    /// The table plus identity, hardware and tags.
    Wide,
    /// The result as JSON.
    Json,
    /// The result as YAML.
    Yaml,
    /// `asset.sightline.dev/<name>`, one per line (for `xargs kubectl …`).
    Name,
}

/// Where a search runs.
pub struct Target {
    /// The operator's API base URL, if any.
    pub api: Option<String>,
    /// Never use the API.
    pub client_side: bool,
}

/// Exit code of a query the language rejects.
pub const EXIT_BAD_QUERY: i32 = 2;

/// A query error, already rendered for the terminal.
#[derive(Debug)]
pub struct BadQuery(pub String);

impl std::fmt::Display for BadQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadQuery {}

/// Prints every field with its type.
pub fn print_fields(out: &mut impl Write) -> Result<()> {
    let all = fields::all();
    let width = all.iter().map(|f| f.name.len()).max().unwrap_or(0);
    writeln!(out, "{:<width$}  {:<7}  DESCRIPTION", "FIELD", "TYPE")?;
    for f in all {
        writeln!(
            out,
            "{:<width$}  {:<7}  {}",
            f.name,
            f.ty.to_string(),
            f.doc
        )?;
    }
    Ok(())
}

pub(crate) fn bearer_token(config: &kube::Config) -> Option<String> {
    if let Ok(t) = std::env::var("SIGHTLINE_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_owned());
    }
    use kube::config::AuthInfo;
    let AuthInfo {
        token, token_file, ..
    } = &config.auth_info;
    if let Some(t) = token {
        use secrecy::ExposeSecret;
        return Some(t.expose_secret().to_owned());
    }
    token_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_owned())
}

pub(crate) enum Remote<T> {
    Answer(T),
    /// The API could not be used; why, for the fallback notice.
    Unavailable(String),
}

pub(crate) async fn get_api<T: serde::de::DeserializeOwned>(
    base: &str,
    path: &str,
    query: &[(&str, String)],
    token: &str,
) -> Result<Remote<T>> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    let http = sightline_report::client::trusting(builder, crate::report::api_ca())
        .map_err(anyhow::Error::msg)?
        .build()
        .context("building the HTTP client")?;
    let resp = match http.get(&url).query(query).bearer_auth(token).send().await {
        Ok(r) => r,
        Err(e) => return Ok(Remote::Unavailable(format!("{url}: {e}"))),
    };
    let status = resp.status();
    if status.is_success() {
        return resp
            .json()
            .await
            .map(Remote::Answer)
            .with_context(|| format!("reading the answer of {url}"));
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = body["error"].as_str().unwrap_or("no details").to_owned();
    match status.as_u16() {
        400 => Err(BadQuery(message).into()),
        401 => bail!("the operator's API did not accept your token: {message}"),
        403 => bail!("not allowed: {message}"),
        503 => Ok(Remote::Unavailable(message)),
        code => bail!("the operator's API answered {code}: {message}"),
    }
}

/// Every Asset the user may list, in pages.
async fn list_assets(client: kube::Client) -> Result<Index> {
    let api: Api<Asset> = Api::all(client);
    let mut index = Index::bulk();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.context("listing Assets")?;
        for a in &page.items {
            index.upsert(a);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => {
                index.finish_bulk();
                return Ok(index);
            }
        }
    }
}

/// Runs a search and prints it.
pub async fn search(
    query: &str,
    limit: usize,
    output: Output,
    target: Target,
    out: &mut impl Write,
) -> Result<()> {
    // Check the query before reaching out anywhere.
    if let Err(e) = parse_query(query) {
        return Err(BadQuery(e.render(query)).into());
    }
    let config = kube::Config::infer()
        .await
        .context("reading the kubeconfig (is KUBECONFIG set?)")?;
    let mut result = None;
    if let (Some(api), false) = (&target.api, target.client_side) {
        match bearer_token(&config) {
            None => eprintln!(
                "note: the kubeconfig has no bearer token for the operator's API; searching client-side"
            ),
            Some(token) => {
                let q = [("q", query.to_owned()), ("limit", limit.to_string())];
                match get_api::<SearchResult>(api, "/api/v1/search", &q, &token).await {
                    Ok(Remote::Answer(r)) => result = Some(r),
                    Ok(Remote::Unavailable(why)) => {
                        eprintln!("note: operator API unavailable ({why}); searching client-side");
                    }
                    Err(e) => match e.downcast::<BadQuery>() {
                        Ok(BadQuery(m)) => return Err(BadQuery(format!("{query}\n{m}")).into()),
                        Err(e) => return Err(e),
                    },
                }
            }
        }
    }
    let result = match result {
        Some(r) => r,
        None => {
            let client = kube::Client::try_from(config).context("connecting to the cluster")?;
            let index = list_assets(client).await?;
            let now = jiff::Timestamp::now().as_second();
            index
                .search(query, now, limit)
                .map_err(|e| BadQuery(e.render(query)))?
        }
    };
    print_result(&result, output, out)
}

fn print_result(r: &SearchResult, output: Output, out: &mut impl Write) -> Result<()> {
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(r)?)?,
        Output::Yaml => write!(out, "{}", serde_saphyr::to_string(r)?)?,
        Output::Name => {
            for h in &r.hits {
                writeln!(out, "asset.sightline.dev/{}", h.name)?;
            }
        }
        Output::Table | Output::Wide => {
            let wide = output == Output::Wide;
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            let mut rows = vec![{
                let mut h = vec![
                    "NAME",
                    "KIND",
                    "DISPLAY NAME",
                    "OS",
                    "LIFECYCLE",
                    "SEVERITY",
                    "LAST SEEN",
                ];
                if wide {
                    h.extend(["HARDWARE", "IDENTITY", "TAGS"]);
                }
                h.into_iter().map(String::from).collect::<Vec<_>>()
            }];
            for h in &r.hits {
                let mut row = vec![
                    h.name.clone(),
                    dash(&h.kind),
                    dash(&h.display_name),
                    dash(&h.os),
                    dash(&h.lifecycle),
                    dash(&h.max_severity),
                    dash(&h.last_seen),
                ];
                if wide {
                    let tags: Vec<String> =
                        h.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    row.extend([
                        dash(&h.hardware),
                        dash(&h.identity),
                        if tags.is_empty() {
                            "-".into()
                        } else {
                            tags.join(",")
                        },
                    ]);
                }
                rows.push(row);
            }
            print_table(&rows, out)?;
            if r.total > r.hits.len() {
                eprintln!(
                    "{} of {} matching Assets shown; raise --limit for more",
                    r.hits.len(),
                    r.total
                );
            }
        }
    }
    Ok(())
}

fn print_table(rows: &[Vec<String>], out: &mut impl Write) -> Result<()> {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end())?;
    }
    Ok(())
}

/// Output formats of `inventory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryOutput {
    /// Counts, for people.
    Table,
    /// The summary as JSON.
    Json,
    /// The summary as YAML.
    Yaml,
}

/// Prints the inventory summary.
pub async fn inventory(target: Target, output: SummaryOutput, out: &mut impl Write) -> Result<()> {
    let config = kube::Config::infer()
        .await
        .context("reading the kubeconfig (is KUBECONFIG set?)")?;
    let mut summary = None;
    if let (Some(api), false, Some(token)) =
        (&target.api, target.client_side, bearer_token(&config))
    {
        match get_api::<Summary>(api, "/api/v1/summary", &[], &token).await? {
            Remote::Answer(s) => summary = Some(s),
            Remote::Unavailable(why) => {
                eprintln!("note: operator API unavailable ({why}); counting client-side");
            }
        }
    }
    let summary = match summary {
        Some(s) => s,
        None => {
            let client = kube::Client::try_from(config).context("connecting to the cluster")?;
            list_assets(client).await?.summary()
        }
    };
    match output {
        SummaryOutput::Json => {
            writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
            return Ok(());
        }
        SummaryOutput::Yaml => {
            write!(out, "{}", serde_saphyr::to_string(&summary)?)?;
            return Ok(());
        }
        SummaryOutput::Table => {}
    }
    writeln!(out, "{} Assets", summary.total)?;
    let groups = [
        ("BY KIND", &summary.by_kind),
        ("BY HARDWARE CATEGORY", &summary.by_category),
        ("BY LIFECYCLE", &summary.by_lifecycle),
        ("BY MAX SEVERITY", &summary.by_max_severity),
    ];
    for (title, counts) in groups {
        writeln!(out, "\n{title}")?;
        for (k, n) in counts {
            writeln!(out, "  {k:<32} {n:>8}")?;
        }
    }
    Ok(())
}
