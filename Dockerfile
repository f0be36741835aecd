# llava on Debian 12: the README's two commands, in a container.
#
#   docker build -t llava .                           # builds and runs every test
#   docker build --build-arg RUN_TESTS=0 -t llava .   # builds only
#   docker run --rm -p 8080:8080 llava                # serves the demo model
#   docker run --rm -p 8080:8080 -v ~/.cache/huggingface:/root/.cache/huggingface \
#       -e MODEL=llava-hf/llava-v1.6-mistral-7b-hf llava
FROM debian:bookworm
ARG RUN_TESTS=1
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      build-essential make ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /src/llava
COPY . .
# The test command (it installs what the build needs: scripts/setup.sh).
RUN apt-get update -qq && if [ "$RUN_TESTS" = 1 ]; then make test; else bash scripts/setup.sh && make; fi
EXPOSE 8080
ENV MODEL=models/demo HOST=0.0.0.0 PORT=8080
# The serve command.
CMD ["sh", "-c", "exec make run MODEL=\"$MODEL\" HOST=\"$HOST\" PORT=\"$PORT\""]
