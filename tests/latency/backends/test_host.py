"""The CPU as fingerprints name it: two generations that a VM calls by one name stay apart."""

from __future__ import annotations

from mdp_trt.latency.backends.host import cpu_description

ZEN3 = ("processor : 0\nvendor_id : AuthenticAMD\ncpu family : 25\nmodel : 1\n"
        "model name : AMD EPYC\nflags : fpu sse4_2 avx fma avx2\n\n"
        "processor : 1\ncpu family : 25\nmodel : 1\nmodel name : AMD EPYC\nflags : avx2\n")
ZEN4 = ZEN3.replace("model : 1\n", "model : 17\n").replace("avx2\n", "avx2 avx512f avx512bw\n")


def test_cpus_of_one_name_but_another_generation_or_vector_width_differ():
    assert cpu_description(ZEN3).startswith("AMD EPYC (family 25 model 1, avx2), ")
    assert cpu_description(ZEN4).startswith("AMD EPYC (family 25 model 17, avx512f), ")


def test_a_cpuinfo_without_numbers_or_flags_still_names_the_cpu():
    arm = "processor : 0\nmodel name : Neoverse-N1\nFeatures : fp asimd crc32\n"
    assert cpu_description(arm).startswith("Neoverse-N1 (asimd), ")
    assert cpu_description("").endswith(" cores")
