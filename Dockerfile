# Lesion Lens as a Hugging Face Space (Docker SDK), or anywhere Docker runs:
#   docker build -t lesion-lens .
#   docker run --rm -p 8501:8501 lesion-lens        # then open http://localhost:8501
# The Space's README.md front matter (docs/space_front_matter.md) says `sdk: docker` and `app_port: 8501`.
# CPU only, training off (the Training page is read-only), the shipped weights baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Spaces run the container as uid 1000; give that user a home it can write (torch, matplotlib caches).
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin user
WORKDIR /home/user/app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# torch and torchvision come from the PyTorch CPU index: PyPI's Linux wheels carry the CUDA
# libraries (gigabytes a Space without a GPU never uses). requirements.txt pins the same versions
# (2.14.1 matches 2.14.1+cpu), so the second install keeps these CPU builds.
COPY requirements.txt ./
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir -r requirements.txt

# The shipped checkpoints and model cards: no download at run time, ever.
COPY --chown=user:user models/weights/ models/weights/
# The app itself (listed, not `COPY . .`, so nothing else from the build context can slip in;
# .dockerignore keeps runs/, the venv, caches and wheels out of the context as well).
COPY --chown=user:user models/*.py models/
COPY --chown=user:user training/ training/
COPY --chown=user:user pages/ pages/
COPY --chown=user:user assets/ assets/
COPY --chown=user:user .streamlit/ .streamlit/
COPY --chown=user:user app.py ./

USER 1000:1000
# LESION_LENS_TRAINING=off: strangers cannot start trainings on the Space.
# The STREAMLIT_* settings override .streamlit/config.toml for the Space (why: see its comments):
# XSRF and CORS checks off, because the Space's iframe blocks the XSRF cookie and a CORS check of the
# .hf.space origin would look up the external IP address; the start-up banner hidden, because with
# --server.address 0.0.0.0 headless Streamlit would look up the external IP address to print it;
# usage statistics off (also in config.toml).
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    LESION_LENS_TRAINING=off \
    TF_CPP_MIN_LOG_LEVEL=2 \
    STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false \
    STREAMLIT_SERVER_ENABLE_CORS=false \
    STREAMLIT_LOGGER_HIDE_WELCOME_MESSAGE=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

EXPOSE 8501
# python:3.11-slim has no curl; Python's urllib asks the health endpoint instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"]

# Bind every interface of the container, with the address given explicitly.
CMD ["streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501", "--server.headless", "true"]
