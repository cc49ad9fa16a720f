"""Data curation: heuristic filters, exact and MinHash near-duplicate removal, benchmark
contamination checks, learned quality scoring, procedural synthetic data, and a sharded,
resumable pipeline runner that writes curated documents plus a per-stage report.

Every stage is a class whose constructor takes plain keyword arguments (so Hydra can build it from
`_target_`), and whose `__call__(docs)` streams kept documents while recording removals in
`stage.report` (a `StageReport`).
"""

from pretrainctl.data.curation.base import Doc, FilterStage, Stage, StageReport
from pretrainctl.data.curation.contamination import ContaminationFilter, ContaminationIndex
from pretrainctl.data.curation.dedup import ExactDedup, MinHashDedup
from pretrainctl.data.curation.heuristics import C4Lines, CodeQuality, GopherQuality, GopherRepetition
from pretrainctl.data.curation.io import read_curated, read_docs
from pretrainctl.data.curation.pipeline import PipelineReport, render_report, run_pipeline
from pretrainctl.data.curation.quality import QualityFilter, QualityScorer
from pretrainctl.data.curation.synthetic import (
    CellularAutomaton,
    CopyTask,
    DyckSequences,
    ModularArithmetic,
    ReverseTask,
    SortTask,
)

__all__ = [
    "C4Lines",
    "CellularAutomaton",
    "CopyTask",
    "DyckSequences",
    "ModularArithmetic",
    "ReverseTask",
    "SortTask",
    "read_curated",
    "read_docs",
    "CodeQuality",
    "ContaminationFilter",
    "ContaminationIndex",
    "Doc",
    "ExactDedup",
    "FilterStage",
    "GopherQuality",
    "GopherRepetition",
    "MinHashDedup",
    "PipelineReport",
    "QualityFilter",
    "QualityScorer",
    "Stage",
    "StageReport",
    "render_report",
    "run_pipeline",
]
