//! svcca-core (being built)
