//! The six components of a shop and the facts the operator needs about each: port, start order,
//! which backing services it uses and who may call it (for NetworkPolicies).

use std::fmt;

/// One of the six services a Shop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// Eureka-compatible service registry.
    Registry,
    /// Product catalogue.
    Product,
    /// Inventory.
    Inventory,
    /// Orders.
    Order,
    /// Notifications.
    Notification,
    /// API gateway.
    Gateway,
}

impl Component {
    /// Apply order: the registry first (everyone registers with it), the gateway last (it routes to
    /// the others), the services in between.
    pub const ALL: [Component; 6] = [
        Component::Registry,
        Component::Product,
        Component::Inventory,
        Component::Order,
        Component::Notification,
        Component::Gateway,
    ];

    /// Lower-case name used in object names, labels and DNS.
    pub fn name(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Product => "product",
            Self::Inventory => "inventory",
            Self::Order => "order",
            Self::Notification => "notification",
            Self::Gateway => "gateway",
        }
    }

    /// Parses a component name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The container (and Service) port, matching the services' defaults.
    pub fn port(self) -> i32 {
        match self {
            Self::Registry => 8761,
            Self::Gateway => 8080,
            Self::Product => 8081,
            Self::Order => 8082,
            Self::Inventory => 8083,
            Self::Notification => 8084,
        }
    }

    /// Needs `DATABASE_URL` (MySQL/MariaDB).
    pub fn uses_mysql(self) -> bool {
        matches!(self, Self::Inventory | Self::Order)
    }

    /// Needs `SHOP_MONGO_URL` (product stores the catalogue, notification the notifications).
    pub fn uses_mongodb(self) -> bool {
        matches!(self, Self::Product | Self::Notification)
    }

    /// Needs `SHOP_KAFKA_BOOTSTRAP`.
    pub fn uses_kafka(self) -> bool {
        matches!(self, Self::Order | Self::Notification)
    }

    /// Components allowed to open connections to this one; `None` means "anyone" (the gateway
    /// takes outside traffic). The registry is called by every component (registration, lookups,
    /// peer replication); the gateway proxies to the four services and to the registry dashboard;
    /// order reserves stock in inventory and product seeds stock into it.
    pub fn callers(self) -> Option<&'static [Component]> {
        match self {
            Self::Gateway => None,
            Self::Registry => Some(&Self::ALL),
            Self::Inventory => Some(&[Self::Gateway, Self::Order, Self::Product]),
            Self::Product | Self::Order | Self::Notification => Some(&[Self::Gateway]),
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_first_gateway_last_and_names_round_trip() {
        assert_eq!(Component::ALL.first(), Some(&Component::Registry));
        assert_eq!(Component::ALL.last(), Some(&Component::Gateway));
        for c in Component::ALL {
            assert_eq!(Component::from_name(c.name()), Some(c));
        }
        assert_eq!(Component::from_name("eureka"), None);
    }

    #[test]
    fn ports_are_the_services_defaults_and_distinct() {
        let mut ports: Vec<i32> = Component::ALL.iter().map(|c| c.port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, vec![8080, 8081, 8082, 8083, 8084, 8761]);
    }
}
