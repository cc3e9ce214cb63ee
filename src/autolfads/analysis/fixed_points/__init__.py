"""Fixed and slow points of a trained LFADS generator (Sussillo & Barak 2013, "Opening the black box").

The generator is a discrete-time map g_t = F(g_{t-1}, u_t). With the input held constant (zero by
default), its fixed points h* = F(h*) and the linearisation F(h* + d) ~ h* + J d around them
describe the dynamics the model has learned: |lambda| < 1 for every eigenvalue lambda of J means a
stable point, an eigenvalue pair lambda = |lambda| e^{+-i theta} an oscillation of theta / (2 pi)
cycles per bin, and |lambda| near 1 a slow (integrating) direction.

Points are found by minimising the speed q(h) = 0.5 ||F(h) - h||^2 from many initial states at once:
Adam first (robust, stays near the states the network visits), then damped Gauss-Newton steps
(Levenberg-Marquardt) that bring true fixed points to machine precision.

Modules: `points` (the `FixedPoints` result), `linearize` (Jacobians, eigenvalues, stability),
`generator` (the GRU generator's one-step map and its closed-form Jacobian), `minimise` (Adam and
Levenberg-Marquardt on q), `search` (`find_fixed_points`, de-duplication), `starts` (visited states
the command's searches start from), `outputs` (h5, plot, table) and `command` (the CLI command).

Shape legend: K workers, B trials, T bins, M initial states, P points found, H state size (G for the
generator), U inferred inputs, E external inputs.
"""

from autolfads.analysis.fixed_points.command import fixed_points_command as fixed_points_command
from autolfads.analysis.fixed_points.generator import GeneratorMap as GeneratorMap
from autolfads.analysis.fixed_points.generator import generator_step as generator_step
from autolfads.analysis.fixed_points.linearize import step_jacobians as step_jacobians
from autolfads.analysis.fixed_points.points import FixedPoints as FixedPoints
from autolfads.analysis.fixed_points.search import find_fixed_points as find_fixed_points

__all__ = [
    "FixedPoints",
    "find_fixed_points",
    "step_jacobians",
    "generator_step",
    "GeneratorMap",
    "fixed_points_command",
]
