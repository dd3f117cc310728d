from tests.particles.fixtures import model_paths, models  # noqa: F401
