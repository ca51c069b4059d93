"""Provider adapters, one module per provider, all behind `orchlab.providers.base.Provider`."""
