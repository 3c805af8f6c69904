"""Settings of the test session."""
import os

# Before its first C++ kernel in a process, torch.compile's inductor compiles and loads a test
# program for each x86 vector ISA the CPU reports (about 8 s per process on a 2-core machine: the
# tests' own process and each script they run). The tests take the CPU's flags on trust instead;
# the g++ the tests need builds every ISA it reports.
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "1")
