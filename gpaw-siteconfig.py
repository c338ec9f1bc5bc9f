# GPAW build configuration (serial, libxc + OpenBLAS from Debian): GPAW_CONFIG=$PWD/gpaw-siteconfig.py
mpi = False
scalapack = False
fftw = False
libraries = ['xc', 'openblas']
