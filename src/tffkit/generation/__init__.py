"""Generators as the first stage of an explained graph: LRP from a detector's logit into a generator (appendix M)."""
