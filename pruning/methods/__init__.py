"""Pruning methods. One file per method, each registered by one YAML in conf/method/ whose
``_target_`` names the class; every method implements ``pruning.methods.base.Method``."""
