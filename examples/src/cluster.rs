//! The services of the `cluster` example: a storefront gateway that fans
//! each quote out to an inventory service and a pricing service, usually on
//! other hosts.

use serde::{Deserialize, Serialize};

/// Why a quote could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuoteError {
    /// No such item.
    UnknownItem(String),
    /// A backend call failed; the status says how.
    Backend {
        /// Which backend.
        service: String,
        /// Its status, as text.
        status: String,
    },
}

impl std::fmt::Display for QuoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownItem(item) => write!(f, "no item {item:?}"),
            Self::Backend { service, status } => write!(f, "{service} failed: {status}"),
        }
    }
}

/// Where a backend answered from: host name, process id, and who it saw
/// calling (the caller's certificate names under mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The answering host's name.
    pub host: String,
    /// The answering process.
    pub pid: u32,
    /// The transport the call arrived on.
    pub transport: String,
    /// The caller's certificate names, or "anonymous".
    pub caller: String,
}

impl Origin {
    /// The origin of the call being handled.
    pub fn here() -> Self {
        let ctx = switchyard::Context::current();
        Self {
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            transport: ctx
                .as_ref()
                .map(|c| c.transport().to_string())
                .unwrap_or_default(),
            caller: ctx
                .as_ref()
                .and_then(|c| c.peer_identity())
                .map(|id| id.dns_names.join(","))
                .unwrap_or_else(|| "anonymous".to_owned()),
        }
    }
}

/// How many of an item are in stock.
#[switchyard::service]
pub trait Inventory {
    /// Units of `item` in stock, and where the answer came from.
    async fn stock(&self, item: String) -> Result<(u32, Origin), QuoteError>;
}

/// What items cost.
#[switchyard::service]
pub trait Pricing {
    /// The unit price of `item` in cents, and where the answer came from.
    async fn price(&self, item: String) -> Result<(u64, Origin), QuoteError>;
}

/// A quote for some units of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The item.
    pub item: String,
    /// Units asked for.
    pub quantity: u32,
    /// Units in stock.
    pub in_stock: u32,
    /// Price of one unit, in cents.
    pub unit_cents: u64,
    /// Price of the units asked for, in cents.
    pub total_cents: u64,
    /// Where the stock figure came from.
    pub inventory: Origin,
    /// Where the price came from.
    pub pricing: Origin,
}

/// The gateway: one call in, two calls out.
#[switchyard::service]
pub trait Storefront {
    /// Asks inventory and pricing at once and combines the answers.
    async fn quote(&self, item: String, quantity: u32) -> Result<Quote, QuoteError>;
}

const CATALOGUE: [(&str, u32, u64); 4] = [
    ("widget", 120, 499),
    ("gadget", 7, 2_450),
    ("sprocket", 0, 99),
    ("flux-capacitor", 1, 1_210_000),
];

fn find(item: &str) -> Result<(u32, u64), QuoteError> {
    CATALOGUE
        .iter()
        .find(|(name, _, _)| *name == item)
        .map(|(_, stock, cents)| (*stock, *cents))
        .ok_or_else(|| QuoteError::UnknownItem(item.to_owned()))
}

/// The inventory backend.
#[derive(Debug, Default)]
pub struct Stockroom;

impl Inventory for Stockroom {
    async fn stock(&self, item: String) -> Result<(u32, Origin), QuoteError> {
        Ok((find(&item)?.0, Origin::here()))
    }
}

/// The pricing backend.
#[derive(Debug, Default)]
pub struct PriceList;

impl Pricing for PriceList {
    async fn price(&self, item: String) -> Result<(u64, Origin), QuoteError> {
        Ok((find(&item)?.1, Origin::here()))
    }
}

/// The gateway, holding clients of both backends.
#[derive(Debug)]
pub struct Gateway {
    /// The inventory backend.
    pub inventory: InventoryClient,
    /// The pricing backend.
    pub pricing: PricingClient,
}

fn backend(service: &str, status: switchyard::Status) -> QuoteError {
    QuoteError::Backend {
        service: service.to_owned(),
        status: status.to_string(),
    }
}

impl Storefront for Gateway {
    async fn quote(&self, item: String, quantity: u32) -> Result<Quote, QuoteError> {
        // Both at once; each inherits this call's deadline.
        let (stock, price) = tokio::join!(
            self.inventory.stock(item.clone()),
            self.pricing.price(item.clone())
        );
        let (in_stock, inventory) = stock.map_err(|s| backend("inventory", s))??;
        let (unit_cents, pricing) = price.map_err(|s| backend("pricing", s))??;
        Ok(Quote {
            item,
            quantity,
            in_stock,
            unit_cents,
            total_cents: unit_cents.saturating_mul(u64::from(quantity)),
            inventory,
            pricing,
        })
    }
}
