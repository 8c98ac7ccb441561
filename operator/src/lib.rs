//! shop-operator: reconciles Shop custom resources into the six components.
