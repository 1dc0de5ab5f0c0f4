"""Shadow models: a candidate classifies a share of the server's faces beside the active model
(``runner``); its disagreements are kept (``emolens.store.shadow``) and it may be promoted through
the gates (``promote``)."""
