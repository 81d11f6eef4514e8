OMP_NUM_THREADS=1 PYTHONPATH=. python recipes/train_mini.py prompt --run kd1 --init-from-checkpoint dglm/checkpoints/mini \
    --head vocab_mixture --vocab-size 8192 --switch-fraction 0.4 --opener-fraction 0.3 --max-continuation 32 \
    --prefix-dropout 0.2 --bow-weight 0.2 --lr 2e-4 --lora-lr 3e-4 --warmup 20 --steps 1500 --time-budget 45 \
    --eval-every 100000 --save-every 25 --eval-limit 16 --batch-size 8 --distill-weight 1.0
