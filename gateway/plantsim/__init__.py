"""The simulated reference plant: a pump–tank–heater skid and the PLC that runs it.

Pure, deterministic code with no I/O: :mod:`points` names what the PLC exposes,
:mod:`faults` lists what can be injected, :mod:`process` integrates the physics,
:mod:`plc` holds the control loops, modes, trips and write acceptance, and
:class:`plant.Plant` puts them together behind the API the protocol servers use.
The plant is deliberately richer than the twin that models it (sensor noise and
quantisation, actuator lags, slow parameter drift, unmodelled effects), so that twin
fidelity is a real measurement rather than a tautology.
"""
