"""Sources: everything that reads documents from outside, behind one interface (base.Source)."""
