from .fitting import Fit, FitError, extrapolation_scores, fit, pareto_frontier
