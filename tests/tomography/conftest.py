from tests.particles.fixtures import model_paths, models, oriented_model_paths  # noqa: F401
