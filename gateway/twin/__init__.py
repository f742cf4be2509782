"""The predictive twin: a reduced-order process model kept in step with the plant.

* :mod:`gateway.twin.model` — what a model is (compiled right-hand side, output function,
  declared states, inputs, parameters, outputs) and the registry ``MODELS``.
* :mod:`gateway.twin.integrate` — fixed-step RK4 over an ensemble of candidate input
  schedules × parameter samples, compiled once with numba; the ``Simulator`` wrapper.
* :mod:`gateway.twin.skid` — the reference skid's reduced-order model.
* :mod:`gateway.twin.build` — ``build_twin(cfg.twin)``: config → (model, simulator).
* :mod:`gateway.twin.numba_cache` — where numba keeps its on-disk cache (import first).

This package imports nothing on its own, so that :func:`numba_cache.use_cache_dir` can run
before numba compiles anything.
"""
