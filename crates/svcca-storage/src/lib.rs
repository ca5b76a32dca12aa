//! svcca-storage (being built)
