"""The member programme the network runs for every partner: policy, expiry, tiers and bonuses."""
