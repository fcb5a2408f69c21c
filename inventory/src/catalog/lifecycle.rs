//! Lifecycle data: release cycles of a product, version → cycle matching and
//! the stage of a cycle on a given day.
//!
//! Stage rules (the same for every product; what each date means per product
//! is written in `lifecycle.yaml` under `stages`):
//!
//! * on or after `eoServiceDate` → [`LifecycleStage::EndOfService`];
//! * else on or after `eolDate` → [`LifecycleStage::EndOfLife`];
//! * else on or after `eosDate` → [`LifecycleStage::EndOfSale`];
//! * else on or after `gaDate` (or when there is no `gaDate`) →
//!   [`LifecycleStage::GeneralAvailability`];
//! * before `gaDate` (a pre-release build) → [`LifecycleStage::Unknown`]: the
//!   catalog has no lifecycle for pre-releases.

use jiff::civil::Date;
use sightline_crds::asset::{Lifecycle, LifecycleStage};

/// The names of the four lifecycle dates, as written in the data and in
/// [`Lifecycle::estimated`].
pub const DATE_FIELDS: [&str; 4] = ["gaDate", "eosDate", "eolDate", "eoServiceDate"];

/// One release cycle of a product (e.g. Debian "12", Kubernetes "1.34").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The cycle as written in the data.
    pub cycle: String,
    /// General availability.
    pub ga: Option<Date>,
    /// End of sale.
    pub eos: Option<Date>,
    /// End of life (regular support over, security fixes continue).
    pub eol: Option<Date>,
    /// End of service (no more patches).
    pub eo_service: Option<Date>,
    /// Which dates are estimates (`gaDate`, `eosDate`, `eolDate`, `eoServiceDate`).
    pub estimated: Vec<String>,
    /// Where each date comes from: date kind → the URL that states it.
    pub sources: std::collections::BTreeMap<String, String>,
}

impl Cycle {
    /// The stage of this cycle on `today` (see the module documentation).
    pub fn stage(&self, today: Date) -> LifecycleStage {
        let reached = |d: Option<Date>| d.is_some_and(|d| d <= today);
        if reached(self.eo_service) {
            LifecycleStage::EndOfService
        } else if reached(self.eol) {
            LifecycleStage::EndOfLife
        } else if reached(self.eos) {
            LifecycleStage::EndOfSale
        } else if self.ga.is_none_or(|ga| ga <= today) {
            LifecycleStage::GeneralAvailability
        } else {
            LifecycleStage::Unknown
        }
    }

    /// The API's lifecycle of this cycle on `today`.
    pub fn lifecycle(&self, today: Date) -> Lifecycle {
        let fmt = |d: Option<Date>| d.map(|d| d.to_string());
        Lifecycle {
            stage: self.stage(today),
            ga_date: fmt(self.ga),
            eos_date: fmt(self.eos),
            eol_date: fmt(self.eol),
            eo_service_date: fmt(self.eo_service),
            estimated: self.estimated.clone(),
        }
    }
}

/// The lifecycle of one product: its cycles and where the data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductLifecycle {
    /// Identifier the normalization rules refer to (e.g. `debian`).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// What each date means for this product.
    pub stages: String,
    /// URLs of the vendor's lifecycle page and/or endoflife.date.
    pub source: Vec<String>,
    /// When the data was retrieved.
    pub retrieved: Date,
    /// Release cycles.
    pub cycles: Vec<Cycle>,
}

impl ProductLifecycle {
    /// The cycle `version` belongs to: the longest cycle whose components are
    /// the leading components of the version ("12" matches "12.5" but not
    /// "1.2"; "22.04" matches "22.04.4").
    pub fn cycle_for(&self, version: &str) -> Option<&Cycle> {
        self.cycles
            .iter()
            .filter(|c| cycle_matches(&c.cycle, version))
            .max_by_key(|c| c.cycle.split('.').count())
    }
}

/// Whether `cycle`'s dot-separated components are the leading components of
/// `version`, compared as text.
pub fn cycle_matches(cycle: &str, version: &str) -> bool {
    let mut v = version.split('.');
    cycle.split('.').all(|c| v.next() == Some(c))
}

/// A lifecycle with only a stage (no dates): used for
/// [`LifecycleStage::Unidentified`] and [`LifecycleStage::Unknown`].
pub fn bare(stage: LifecycleStage) -> Lifecycle {
    Lifecycle {
        stage,
        ga_date: None,
        eos_date: None,
        eol_date: None,
        eo_service_date: None,
        estimated: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn cycles_match_by_components() {
        assert!(cycle_matches("12", "12.5"));
        assert!(cycle_matches("12", "12"));
        assert!(!cycle_matches("1.2", "12"));
        assert!(!cycle_matches("12", "1.2"));
        assert!(cycle_matches("22.04", "22.04.4"));
        assert!(!cycle_matches("22.04", "22.10"));
        assert!(cycle_matches("1.34", "1.34.4"));
        assert!(!cycle_matches("1.3", "1.34.4"));
        assert!(cycle_matches("18", "18.19.0"));
        assert!(cycle_matches("2023", "2023.5.20240805"));
        assert!(!cycle_matches("2", "2023.5.20240805"));
        assert!(!cycle_matches("3.1", "3.10.2"));
        assert!(!cycle_matches("1.34", "1"));
    }

    #[test]
    fn stage_boundaries() {
        let c = Cycle {
            cycle: "1".into(),
            ga: Some(date(2020, 1, 1)),
            eos: Some(date(2021, 1, 1)),
            eol: Some(date(2022, 1, 1)),
            eo_service: Some(date(2023, 1, 1)),
            estimated: vec![],
            sources: Default::default(),
        };
        assert_eq!(c.stage(date(2019, 12, 31)), LifecycleStage::Unknown);
        assert_eq!(
            c.stage(date(2020, 1, 1)),
            LifecycleStage::GeneralAvailability
        );
        assert_eq!(c.stage(date(2021, 1, 1)), LifecycleStage::EndOfSale);
        assert_eq!(c.stage(date(2022, 1, 1)), LifecycleStage::EndOfLife);
        assert_eq!(c.stage(date(2022, 12, 31)), LifecycleStage::EndOfLife);
        assert_eq!(c.stage(date(2023, 1, 1)), LifecycleStage::EndOfService);
    }
}
