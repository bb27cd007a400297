# gunicorn settings for the flask_toucan multi-worker example.
bind = "127.0.0.1:8000"
workers = 4
threads = 4  # gthread: a worker waiting on a lock or on Toucan does not block the others
timeout = 30
graceful_timeout = 10
# No preload: each worker builds its own HTTP pool and background renewal thread
# after the fork (flask_toucan would also rebuild them if they were inherited).
preload_app = False
accesslog = "-"
