"""DFT with GPAW in the convention of the shared crystals: the settings (:mod:`.settings`), one calculation written as
a calculation folder that ``chgdata ingest --from-dir`` reads (:mod:`.calculation`), and the subprocess entry point
that runs one structure in isolation (:mod:`.worker`). GPAW is the optional extra ``chgdata[dft]``; nothing here
imports it at module level."""
