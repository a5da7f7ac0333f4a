"""The model families: each module here registers one (`@family.register`); `family.families()`
imports them all, so that a new family is a new module and nothing else."""
