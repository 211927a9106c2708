"""Privacy: differentially private training (`dp`) and the empirical leakage audit
(`membership`)."""
