"""Physical constants, written once (no imports, so every part of the library may use them)."""

#: Molar gas constant in kJ/(mol K) (CODATA 2018, as OpenMM's ``MOLAR_GAS_CONSTANT_R``);
#: kT = R T.
GAS_CONSTANT = 0.00831446261815324

#: kJ per kcal (thermochemical calorie).
KJ_PER_KCAL = 4.184

#: The default OpenMM force field (a file shipped with OpenMM), written once: systems, the
#: pipeline, the wire schemas, the CLI and the SDK all take their default from here.
DEFAULT_FORCEFIELD: tuple[str, ...] = ("amber99sbildn.xml",)
